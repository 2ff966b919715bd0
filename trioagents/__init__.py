"""trioagents: write AI agents with Trio, serve them over every protocol their clients speak.

The public API is re-exported here; everything else lives in private modules or in the
subpackages (``trioagents.uamp``, ``trioagents.protocols``, ``trioagents.transports``,
``trioagents.client``, ``trioagents.testing``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._errors import (
    AgentError as AgentError,
    LocalProtocolError as LocalProtocolError,
    MaxStepsExceeded as MaxStepsExceeded,
    ModelError as ModelError,
    ProtocolError as ProtocolError,
    RemoteProtocolError as RemoteProtocolError,
    ToolTimeout as ToolTimeout,
    TrioAgentsError as TrioAgentsError,
)
from .config import Config as Config

if TYPE_CHECKING:
    from .agent import (
        Agent as Agent,
        BuiltinModel as BuiltinModel,
        CallTool as CallTool,
        Context as Context,
        Fail as Fail,
        Message as Message,
        Model as Model,
        ModelRequest as ModelRequest,
        OpenAIModel as OpenAIModel,
        Reply as Reply,
        Session as Session,
        Skill as Skill,
        Think as Think,
        handoff as handoff,
        hook as hook,
        http as http,
        prompt as prompt,
        tool as tool,
        websocket as websocket,
    )
    from .server import AgentServer as AgentServer, serve as serve

# The runtime and the server (trio, Starlette, Hypercorn, httpx) load on first use, so that
# ``trioagents.uamp`` and ``trioagents.protocols`` stay importable without any I/O library.
_LAZY = {
    **dict.fromkeys(
        (
            "Agent",
            "BuiltinModel",
            "CallTool",
            "Context",
            "Fail",
            "Message",
            "Model",
            "ModelRequest",
            "OpenAIModel",
            "Reply",
            "Session",
            "Skill",
            "Think",
            "handoff",
            "hook",
            "http",
            "prompt",
            "tool",
            "websocket",
        ),
        ".agent",
    ),
    "AgentServer": ".server",
    "serve": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trioagents' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "AgentServer",
    "BuiltinModel",
    "CallTool",
    "Config",
    "Context",
    "Fail",
    "LocalProtocolError",
    "MaxStepsExceeded",
    "Message",
    "Model",
    "ModelError",
    "ModelRequest",
    "OpenAIModel",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "Session",
    "Skill",
    "Think",
    "ToolTimeout",
    "TrioAgentsError",
    "handoff",
    "hook",
    "http",
    "prompt",
    "serve",
    "tool",
    "websocket",
]
