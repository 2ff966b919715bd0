"""trioagents: write AI agents with Trio, serve them over every protocol their clients speak.

The public API is re-exported here; everything else lives in private modules or in the
subpackages (``trioagents.uamp``, ``trioagents.protocols``, ``trioagents.transports``,
``trioagents.client``, ``trioagents.testing``).
"""

from __future__ import annotations

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
from .agent import (
    Agent as Agent,
    BuiltinModel as BuiltinModel,
    CallTool as CallTool,
    Context as Context,
    Fail as Fail,
    Message as Message,
    Model as Model,
    ModelRequest as ModelRequest,
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
from .config import Config as Config
from .server import AgentServer as AgentServer, serve as serve

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
