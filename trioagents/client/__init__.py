"""Trio clients for trioagents servers."""

from __future__ import annotations

from .connection import (
    AgentClient as AgentClient,
    AgentClientClosed as AgentClientClosed,
    AgentClientError as AgentClientError,
    CloseInfo as CloseInfo,
    RpcError as RpcError,
    RpcStream as RpcStream,
    SendQueueFull as SendQueueFull,
    open_agent_client as open_agent_client,
)
from .uamp import (
    ResponseResult as ResponseResult,
    UampClient as UampClient,
    UampClientSession as UampClientSession,
    UampClosed as UampClosed,
    UampError as UampError,
    open_uamp_client as open_uamp_client,
)

__all__ = [
    "AgentClient",
    "AgentClientClosed",
    "AgentClientError",
    "CloseInfo",
    "ResponseResult",
    "RpcError",
    "RpcStream",
    "SendQueueFull",
    "UampClient",
    "UampClientSession",
    "UampClosed",
    "UampError",
    "open_agent_client",
    "open_uamp_client",
]
