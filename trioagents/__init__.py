"""trioagents: write AI agents with Trio, serve them over every protocol their clients speak.

The public API is re-exported here; everything else lives in private modules or in the
subpackages (``trioagents.uamp``, ``trioagents.protocols``, ``trioagents.transports``,
``trioagents.client``, ``trioagents.testing``).
"""

from __future__ import annotations

from ._errors import (
    AgentError as AgentError,
)
from ._errors import (
    LocalProtocolError as LocalProtocolError,
)
from ._errors import (
    MaxStepsExceeded as MaxStepsExceeded,
)
from ._errors import (
    ModelError as ModelError,
)
from ._errors import (
    ProtocolError as ProtocolError,
)
from ._errors import (
    RemoteProtocolError as RemoteProtocolError,
)
from ._errors import (
    ToolTimeout as ToolTimeout,
)
from ._errors import (
    TrioAgentsError as TrioAgentsError,
)
from .agent import (
    Agent as Agent,
)
from .agent import (
    BuiltinModel as BuiltinModel,
)
from .agent import (
    CallTool as CallTool,
)
from .agent import (
    Context as Context,
)
from .agent import (
    Fail as Fail,
)
from .agent import (
    Message as Message,
)
from .agent import (
    Model as Model,
)
from .agent import (
    ModelRequest as ModelRequest,
)
from .agent import (
    OpenAIModel as OpenAIModel,
)
from .agent import (
    Reply as Reply,
)
from .agent import (
    Session as Session,
)
from .agent import (
    Skill as Skill,
)
from .agent import (
    Think as Think,
)
from .agent import (
    handoff as handoff,
)
from .agent import (
    hook as hook,
)
from .agent import (
    http as http,
)
from .agent import (
    prompt as prompt,
)
from .agent import (
    tool as tool,
)
from .agent import (
    websocket as websocket,
)
from .config import Config as Config
from .server import AgentServer as AgentServer
from .server import serve as serve

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
