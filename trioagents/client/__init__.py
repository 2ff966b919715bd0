"""Trio clients for trioagents servers."""

from __future__ import annotations

from .uamp import (
    ResponseResult as ResponseResult,
    UampClient as UampClient,
    UampClientSession as UampClientSession,
    UampClosed as UampClosed,
    UampError as UampError,
    open_uamp_client as open_uamp_client,
)

__all__ = [
    "ResponseResult",
    "UampClient",
    "UampClientSession",
    "UampClosed",
    "UampError",
    "open_uamp_client",
]
