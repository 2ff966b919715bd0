"""The agent runtime: ``Agent``, ``Skill``, decorators, models and the run loop."""

from __future__ import annotations

from ._agent import (
    AGENT_NAME_RE as AGENT_NAME_RE,
)
from ._agent import (
    Agent as Agent,
)
from ._agent import (
    Context as Context,
)
from ._agent import (
    HttpEndpoint as HttpEndpoint,
)
from ._agent import (
    Session as Session,
)
from ._agent import (
    Skill as Skill,
)
from ._agent import (
    ToolSpec as ToolSpec,
)
from ._agent import (
    WebSocketEndpoint as WebSocketEndpoint,
)
from ._builtin import BuiltinModel as BuiltinModel
from ._builtin import CallTool as CallTool
from ._builtin import Fail as Fail
from ._builtin import Reply as Reply
from ._builtin import Think as Think
from ._decorators import (
    HOOK_POINTS as HOOK_POINTS,
)
from ._decorators import (
    handoff as handoff,
)
from ._decorators import (
    hook as hook,
)
from ._decorators import (
    http as http,
)
from ._decorators import (
    prompt as prompt,
)
from ._decorators import (
    tool as tool,
)
from ._decorators import (
    websocket as websocket,
)
from ._messages import Message as Message
from ._messages import message_to_openai as message_to_openai
from ._messages import messages_from_openai as messages_from_openai
from ._model import (
    Model as Model,
)
from ._model import (
    ModelEvent as ModelEvent,
)
from ._model import (
    ModelRequest as ModelRequest,
)
from ._model import (
    TextChunk as TextChunk,
)
from ._model import (
    ThinkingChunk as ThinkingChunk,
)
from ._model import (
    ToolCallRequest as ToolCallRequest,
)
from ._model import (
    Usage as Usage,
)
from ._openai import OpenAIModel as OpenAIModel
from ._run import is_cancellation as is_cancellation
from ._run import run_response as run_response
