"""``python -m trioagents``: the same as the ``trioagents`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
