"""The exception tree.

::

    TrioAgentsError
    ├── AgentError                 the agent failed a turn (→ response.error agent_error)
    │   ├── MaxStepsExceeded       the LLM↔tool loop hit its bound
    │   └── ToolTimeout            client tools did not answer in time (→ tool_timeout)
    ├── ModelError                 an LLM provider failed (status and code from the provider)
    └── ProtocolError              a peer or we broke a wire protocol
        ├── RemoteProtocolError    the peer sent something invalid
        └── LocalProtocolError     we were asked to send something invalid

Each error carries the UAMP ``code`` it maps to, so every transport renders it in its own shape.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TrioAgentsError",
    "AgentError",
    "MaxStepsExceeded",
    "ToolTimeout",
    "ModelError",
    "ProtocolError",
    "RemoteProtocolError",
    "LocalProtocolError",
]


class TrioAgentsError(Exception):
    """Root of every error trioagents raises on purpose.

    Attributes:
        code: the UAMP error code this error maps to.
        message: human-readable text.
        details: extra JSON data for the client.
    """

    code: str = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class AgentError(TrioAgentsError):
    """The agent could not complete a turn. Raise it from a tool or hook to fail the response."""

    code = "agent_error"


class MaxStepsExceeded(AgentError):
    """The run loop reached ``max_steps`` LLM calls without a final answer."""


class ToolTimeout(AgentError):
    """Client tools did not send ``tool.result`` within ``tool_result_timeout``."""

    code = "tool_timeout"


class ModelError(TrioAgentsError):
    """An LLM provider failed.

    Attributes:
        status: the provider's HTTP status, when there was one.
    """

    code = "agent_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.status = status


class ProtocolError(TrioAgentsError):
    """A wire protocol was broken."""

    code = "invalid_event"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""
