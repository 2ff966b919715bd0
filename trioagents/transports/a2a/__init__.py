"""A2A (PROTOCOLS.md §6): the transport, its task stores and :class:`InputRequired`."""

from __future__ import annotations

from .service import A2AService as A2AService, InputRequired as InputRequired
from .store import (
    MemoryTaskStore as MemoryTaskStore,
    SqliteTaskStore as SqliteTaskStore,
    TaskStore as TaskStore,
)
from .transport import DB_ENV as DB_ENV, A2ATransport as A2ATransport

__all__ = [
    "DB_ENV",
    "A2AService",
    "A2ATransport",
    "InputRequired",
    "MemoryTaskStore",
    "SqliteTaskStore",
    "TaskStore",
]
