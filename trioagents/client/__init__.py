"""Trio clients for trioagents servers."""

from __future__ import annotations

from .uamp import (
    ResponseResult as ResponseResult,
)
from .uamp import (
    UampClient as UampClient,
)
from .uamp import (
    UampClientSession as UampClientSession,
)
from .uamp import (
    UampClosed as UampClosed,
)
from .uamp import (
    UampError as UampError,
)
from .uamp import (
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
