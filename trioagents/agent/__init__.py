"""The agent runtime: ``Agent``, ``Skill``, decorators, models and the run loop."""

from __future__ import annotations

from ._agent import (
    AGENT_NAME_RE as AGENT_NAME_RE,
    Agent as Agent,
    Context as Context,
    HttpEndpoint as HttpEndpoint,
    Session as Session,
    Skill as Skill,
    ToolSpec as ToolSpec,
    WebSocketEndpoint as WebSocketEndpoint,
)
from ._builtin import (
    BuiltinModel as BuiltinModel,
    CallTool as CallTool,
    Fail as Fail,
    Reply as Reply,
    Think as Think,
)
from ._decorators import (
    HOOK_POINTS as HOOK_POINTS,
    handoff as handoff,
    hook as hook,
    http as http,
    prompt as prompt,
    tool as tool,
    websocket as websocket,
)
from ._messages import (
    Message as Message,
    message_to_openai as message_to_openai,
    messages_from_openai as messages_from_openai,
)
from ._model import (
    Model as Model,
    ModelEvent as ModelEvent,
    ModelRequest as ModelRequest,
    TextChunk as TextChunk,
    ThinkingChunk as ThinkingChunk,
    ToolCallRequest as ToolCallRequest,
    Usage as Usage,
)
from ._openai import OpenAIModel as OpenAIModel
from ._run import is_cancellation as is_cancellation, run_response as run_response
