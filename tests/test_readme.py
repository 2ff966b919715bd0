"""The README's Python snippets compile, and its testing example passes for real."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_python_snippets_compile() -> None:
    snippets = _snippets()
    assert len(snippets) >= 5
    for i, code in enumerate(snippets):
        compile(code, f"README.md snippet {i}", "exec")


async def test_testing_snippet_runs() -> None:
    [code] = [c for c in _snippets() if "async def test_my_agent" in c]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md testing snippet", "exec"), namespace)
    with trio.fail_after(10):
        await namespace["test_my_agent"]()
