"""UAMP events and content items (PROTOCOLS.md §1 and §9.3).

Theory of operation
-------------------
Every class here is a frozen ``attrs`` value that carries data only: no I/O, no clocks, no
random ids. The wire ``type`` of each class is an ordinary field with a fixed default
(``init=False``), so an instance always knows its own wire name and ``match`` statements can
use it. Envelope fields (``event_id``, ``timestamp``) are optional on every event: clients may
omit them, and the codec stamps them onto server events when it encodes, using an injected id
factory and clock (see :mod:`trioagents.uamp._codec`).

Optional fields default to ``None`` and are left out of the JSON when they are ``None``; every
other field is always written, so required wire fields (``status: "completed"``) never vanish.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "AudioContent",
    "AudioDelta",
    "AudioOutputDelta",
    "AudioOutputDone",
    "CONTENT_TYPES",
    "Capabilities",
    "CapabilitiesQuery",
    "ClientCapabilities",
    "ClientEvent",
    "ContentItem",
    "DELTA_TYPES",
    "Delta",
    "Error",
    "ErrorInfo",
    "FileContent",
    "ImageContent",
    "InputAudio",
    "InputFile",
    "InputImage",
    "InputText",
    "InputTyping",
    "InputVideo",
    "JSON",
    "PaymentAccepted",
    "PaymentBalance",
    "PaymentError",
    "PaymentInfo",
    "PaymentRequired",
    "PaymentSubmit",
    "Ping",
    "Pong",
    "Progress",
    "RateLimit",
    "ResponseCancel",
    "ResponseCancelled",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDelta",
    "ResponseDone",
    "ResponseError",
    "ResponseInfo",
    "ServerEvent",
    "SessionCreate",
    "SessionCreated",
    "SessionEnd",
    "SessionError",
    "SessionInfo",
    "SessionUpdate",
    "SessionUpdated",
    "TERMINAL_TYPES",
    "TextContent",
    "TextDelta",
    "Thinking",
    "ToolCall",
    "ToolCallContent",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolCallInfo",
    "ToolProgressDelta",
    "ToolProgressInfo",
    "ToolResult",
    "ToolResultContent",
    "ToolResultDelta",
    "ToolResultInfo",
    "TranscriptDelta",
    "TranscriptDone",
    "UnknownEvent",
    "UsageDelta",
    "UsageDeltaInfo",
    "UsageInfo",
    "VideoContent",
]

JSON = Any
"""A JSON value (dict, list, str, int, float, bool or None)."""


def _type(name: str) -> Any:
    return attrs.field(default=name, init=False)


# --------------------------------------------------------------------------------------------
# Errors carried inside events
# --------------------------------------------------------------------------------------------


@attrs.frozen
class ErrorInfo:
    """The ``error{code, message, details?}`` object of error events."""

    code: str
    message: str
    details: dict[str, JSON] | None = None


# --------------------------------------------------------------------------------------------
# Content items (conversation content and ``response.done.output``)
# --------------------------------------------------------------------------------------------


@attrs.frozen
class ToolCallInfo:
    """A function call requested by the model: ``{id, name, arguments}`` (arguments is JSON text)."""

    id: str
    name: str
    arguments: str


@attrs.frozen
class ToolResultInfo:
    """The result of a tool call: ``{call_id, result, is_error?, status?}``."""

    call_id: str
    result: str
    is_error: bool | None = None
    status: str | None = None


@attrs.frozen
class TextContent:
    """Plain text."""

    text: str
    content_id: str | None = None
    type: str = _type("text")


@attrs.frozen
class ImageContent:
    """An image: base64 data or ``{"url": …}``."""

    image: JSON
    format: str | None = None
    detail: str | None = None
    content_id: str | None = None
    type: str = _type("image")


@attrs.frozen
class AudioContent:
    """Base64 audio."""

    audio: str
    format: str | None = None
    content_id: str | None = None
    type: str = _type("audio")


@attrs.frozen
class VideoContent:
    """A video: base64 data or ``{"url": …}``."""

    video: JSON
    format: str | None = None
    content_id: str | None = None
    type: str = _type("video")


@attrs.frozen
class FileContent:
    """A file: base64 data or ``{"url": …}``, with its name and MIME type."""

    file: JSON
    filename: str | None = None
    mime_type: str | None = None
    content_id: str | None = None
    type: str = _type("file")


@attrs.frozen
class ToolCallContent:
    """A tool call made by the assistant."""

    tool_call: ToolCallInfo
    type: str = _type("tool_call")


@attrs.frozen
class ToolResultContent:
    """The result of a tool call."""

    tool_result: ToolResultInfo
    type: str = _type("tool_result")


ContentItem = (
    TextContent
    | ImageContent
    | AudioContent
    | VideoContent
    | FileContent
    | ToolCallContent
    | ToolResultContent
)
CONTENT_TYPES: tuple[type, ...] = ContentItem.__args__  # type: ignore[attr-defined]

# --------------------------------------------------------------------------------------------
# Response deltas
# --------------------------------------------------------------------------------------------


@attrs.frozen
class TextDelta:
    """A piece of streamed text."""

    text: str
    type: str = _type("text")


@attrs.frozen
class AudioDelta:
    """A piece of streamed base64 audio."""

    audio: str
    type: str = _type("audio")


@attrs.frozen
class ToolCallDelta:
    """A tool call the response makes (agent or client tool)."""

    tool_call: ToolCallInfo
    type: str = _type("tool_call")


@attrs.frozen
class ToolResultDelta:
    """An agent tool's result."""

    tool_result: ToolResultInfo
    type: str = _type("tool_result")


@attrs.frozen
class ToolProgressInfo:
    """Progress text reported by a running tool."""

    call_id: str
    text: str


@attrs.frozen
class ToolProgressDelta:
    """Progress of a running agent tool."""

    tool_progress: ToolProgressInfo
    type: str = _type("tool_progress")


Delta = TextDelta | AudioDelta | ToolCallDelta | ToolResultDelta | ToolProgressDelta
DELTA_TYPES: tuple[type, ...] = Delta.__args__  # type: ignore[attr-defined]

# --------------------------------------------------------------------------------------------
# Client → server events
# --------------------------------------------------------------------------------------------


@attrs.frozen
class SessionCreate:
    """``session.create``: open a session (agent/token may be top level or inside ``session``)."""

    uamp_version: str = "1.0"
    session: dict[str, JSON] | None = None
    client_capabilities: dict[str, JSON] | None = None
    agent: str | None = None
    chat: str | None = None
    token: str | None = None
    payment_token: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("session.create")


@attrs.frozen
class SessionUpdate:
    """``session.update``: change a session's configuration or tokens."""

    session_id: str | None = None
    session: dict[str, JSON] | None = None
    token: str | None = None
    payment_token: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("session.update")


@attrs.frozen
class SessionEnd:
    """``session.end`` from the client (request) or the server (confirmation)."""

    session_id: str | None = None
    reason: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("session.end")


@attrs.frozen
class CapabilitiesQuery:
    """``capabilities.query``: ask for the agent's capabilities."""

    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("capabilities.query")


@attrs.frozen
class ClientCapabilities:
    """``client.capabilities``: the client announces what it supports (stored silently)."""

    capabilities: dict[str, JSON] | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("client.capabilities")


@attrs.frozen
class InputText:
    """``input.text``: a message; ``messages`` replaces the whole conversation first."""

    text: str = ""
    role: Literal["user", "system", "assistant"] = "user"
    messages: list[dict[str, JSON]] | None = None
    payment_token: str | None = None
    context: dict[str, JSON] | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("input.text")


@attrs.frozen
class InputAudio:
    """``input.audio``: a chunk of base64 audio; the final chunk acts as a user input."""

    audio: str
    format: str | None = None
    is_final: bool | None = None
    content_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("input.audio")


@attrs.frozen
class InputImage:
    """``input.image``: buffered for the next user input."""

    image: JSON
    format: str | None = None
    detail: str | None = None
    content_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("input.image")


@attrs.frozen
class InputVideo:
    """``input.video``: buffered for the next user input."""

    video: JSON
    format: str | None = None
    content_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("input.video")


@attrs.frozen
class InputFile:
    """``input.file``: buffered for the next user input."""

    file: JSON
    filename: str | None = None
    mime_type: str | None = None
    content_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("input.file")


@attrs.frozen
class InputTyping:
    """``input.typing``: a typing indicator, passed to hooks only."""

    is_typing: bool = True
    chat_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("input.typing")


@attrs.frozen
class ResponseCreate:
    """``response.create``: start a response (or bind to the auto-started one, §1.4)."""

    response: dict[str, JSON] | None = None
    response_format: JSON = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.create")


@attrs.frozen
class ResponseCancel:
    """``response.cancel``: cancel the running response's whole task tree."""

    response_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.cancel")


@attrs.frozen
class ToolResult:
    """``tool.result``: the result of a client tool call; resumes the paused response."""

    call_id: str
    result: str = ""
    is_error: bool | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("tool.result")


@attrs.frozen
class PaymentInfo:
    """The ``payment`` object of ``payment.submit``."""

    scheme: str = "token"
    network: str | None = None
    token: str | None = None
    proof: JSON = None
    amount: str | None = None
    ap2_credential: JSON = None


@attrs.frozen
class PaymentSubmit:
    """``payment.submit``: a payment token for a waiting response (§9.3)."""

    payment: PaymentInfo
    response_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("payment.submit")


@attrs.frozen
class Ping:
    """``ping``: answered with ``pong`` at any time."""

    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("ping")


@attrs.frozen
class Pong:
    """``pong``: the answer to ``ping``."""

    session_id: str | None = None
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("pong")


@attrs.frozen
class UnknownEvent:
    """An event whose ``type`` this version does not know; ``raw`` keeps the whole object."""

    type: str
    raw: dict[str, JSON] = attrs.field(factory=dict, eq=False, repr=False)
    event_id: str | None = None
    session_id: str | None = None


ClientEvent = (
    SessionCreate
    | SessionUpdate
    | SessionEnd
    | CapabilitiesQuery
    | ClientCapabilities
    | InputText
    | InputAudio
    | InputImage
    | InputVideo
    | InputFile
    | InputTyping
    | ResponseCreate
    | ResponseCancel
    | ToolResult
    | PaymentSubmit
    | Ping
    | Pong
)

# --------------------------------------------------------------------------------------------
# Server → client events
# --------------------------------------------------------------------------------------------


@attrs.frozen
class SessionInfo:
    """The ``session`` object of ``session.created`` / ``session.updated``."""

    id: str
    status: str = "active"
    config: dict[str, JSON] = attrs.field(factory=dict)
    created_at: int | None = None


@attrs.frozen
class SessionCreated:
    """``session.created``."""

    session_id: str
    agent: str
    session: SessionInfo
    uamp_version: str = "1.0"
    chat: str | None = None
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("session.created")


@attrs.frozen
class SessionUpdated:
    """``session.updated``."""

    session_id: str
    session: SessionInfo
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("session.updated")


@attrs.frozen
class SessionError:
    """``session.error``: ``unauthorized``, ``agent_not_found``, ``too_many_sessions``, …"""

    error: ErrorInfo
    session_id: str | None = None
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("session.error")


@attrs.frozen
class Capabilities:
    """``capabilities``: what the agent can do."""

    capabilities: dict[str, JSON]
    session_id: str | None = None
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("capabilities")


@attrs.frozen
class ResponseCreated:
    """``response.created``: a response started; exactly one terminal event follows."""

    response_id: str
    session_id: str | None = None
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.created")


@attrs.frozen
class ResponseDelta:
    """``response.delta``: text, audio, tool call, tool result or tool progress."""

    response_id: str
    delta: Delta
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.delta")


@attrs.frozen
class ToolCall:
    """``tool.call``: the response asks the client to run one of its tools and pauses."""

    response_id: str
    call_id: str
    name: str
    arguments: str
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("tool.call")


@attrs.frozen
class ToolCallDone:
    """``tool.call_done``: an agent tool finished."""

    response_id: str
    call_id: str
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("tool.call_done")


@attrs.frozen
class Progress:
    """``progress`` of a tool, the response, an upload or reasoning."""

    target: str
    target_id: str | None = None
    stage: str | None = None
    message: str | None = None
    percent: float | None = None
    step: int | None = None
    total_steps: int | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("progress")


@attrs.frozen
class Thinking:
    """``thinking``: reasoning content, kept out of the answer text."""

    response_id: str
    content: str
    stage: str | None = None
    redacted: bool | None = None
    is_delta: bool | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("thinking")


@attrs.frozen
class UsageInfo:
    """Token usage; only sent when known."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    cost: float | None = None


@attrs.frozen
class UsageDeltaInfo:
    """The ``delta`` of ``usage.delta``."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@attrs.frozen
class UsageDelta:
    """``usage.delta``."""

    response_id: str
    delta: UsageDeltaInfo
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("usage.delta")


@attrs.frozen
class AudioOutputDelta:
    """``audio.delta``: a piece of the response's spoken audio (base64)."""

    response_id: str
    audio: str
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("audio.delta")


@attrs.frozen
class AudioOutputDone:
    """``audio.done``: the response's audio is complete."""

    response_id: str
    duration_ms: int | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("audio.done")


@attrs.frozen
class TranscriptDelta:
    """``transcript.delta``: a piece of a transcript."""

    transcript: str
    response_id: str | None = None
    role: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("transcript.delta")


@attrs.frozen
class TranscriptDone:
    """``transcript.done``: a complete transcript (of the user's audio input, ``role:"user"``,
    right after the ``response.created`` it triggered; without ``response_id`` when no
    response follows)."""

    transcript: str
    response_id: str | None = None
    role: str | None = None
    content_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("transcript.done")


@attrs.frozen
class RateLimit:
    """``rate_limit``."""

    limit: int
    remaining: int
    reset_at: int
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("rate_limit")


@attrs.frozen
class ResponseInfo:
    """The ``response`` object of ``response.done``; ``status`` is always ``completed``."""

    id: str
    output: list[ContentItem] = attrs.field(factory=list)
    status: str = "completed"
    usage: UsageInfo | None = None


@attrs.frozen
class ResponseDone:
    """``response.done``: the response completed."""

    response_id: str
    response: ResponseInfo
    signature: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.done")


@attrs.frozen
class ResponseError:
    """``response.error``: the response failed (``agent_error``, ``tool_timeout``, …)."""

    response_id: str
    error: ErrorInfo
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.error")


@attrs.frozen
class ResponseCancelled:
    """``response.cancelled``: the response was cancelled; ``partial_output`` was streamed."""

    response_id: str
    partial_output: list[ContentItem] = attrs.field(factory=list)
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("response.cancelled")


@attrs.frozen
class Error:
    """``error``: a connection-level problem with one client event; the socket stays open."""

    error: ErrorInfo
    session_id: str | None = None
    reply_to: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("error")


@attrs.frozen
class PaymentRequired:
    """``payment.required``: the response waits for ``payment.submit`` (§9.3)."""

    response_id: str
    requirements: dict[str, JSON]
    accepts: list[JSON] | None = None
    extra: dict[str, JSON] | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("payment.required")


@attrs.frozen
class PaymentAccepted:
    """``payment.accepted``."""

    payment_id: str
    balance_remaining: str
    expires_at: int | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("payment.accepted")


@attrs.frozen
class PaymentBalance:
    """``payment.balance``."""

    balance: str
    currency: str
    threshold: str
    low_balance_warning: bool
    estimated_remaining: int | None = None
    expires_at: int | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("payment.balance")


@attrs.frozen
class PaymentError:
    """``payment.error``."""

    code: str
    message: str
    can_retry: bool
    balance_required: str | None = None
    balance_current: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    timestamp: int | None = None
    type: str = _type("payment.error")


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SessionError
    | SessionEnd
    | Capabilities
    | ResponseCreated
    | ResponseDelta
    | ToolCall
    | ToolCallDone
    | Progress
    | Thinking
    | UsageDelta
    | AudioOutputDelta
    | AudioOutputDone
    | TranscriptDelta
    | TranscriptDone
    | RateLimit
    | ResponseDone
    | ResponseError
    | ResponseCancelled
    | Error
    | PaymentRequired
    | PaymentAccepted
    | PaymentBalance
    | PaymentError
    | Ping
    | Pong
)

TERMINAL_TYPES = frozenset({"response.done", "response.error", "response.cancelled"})
"""The three events that end a response (the terminal rule, §1.3)."""
