"""The trioagents benchmark suite: ``python -m benchmarks --help`` (or ``trioagents bench``).

Not part of the installed package; run it from a checkout. See ``benchmarks/README.md``.
"""
