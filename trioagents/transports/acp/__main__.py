"""``python -m trioagents.transports.acp TARGET``: ACP over stdio (same as ``trioagents acp``)."""

from __future__ import annotations

from ._stdio import main_acp

if __name__ == "__main__":
    raise SystemExit(main_acp())
