"""Where connection-agent state lives between restarts.

One interface (:class:`StateStore`), two implementations:

* :class:`MemoryStateStore` — a dict; gone when the process exits.
* :class:`SqliteStateStore` — stdlib ``sqlite3`` (WAL mode), one table keyed by
  ``(agent, instance)``. The single connection is used from a worker thread
  (``trio.to_thread.run_sync``) by one caller at a time under a ``trio.Lock``; the thread is
  never abandoned on cancellation, so a write either happened or did not start.

State is stored as JSON text together with its version, so an instance continues counting
versions where it stopped.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from .._sqlite import SqliteDatabase

__all__ = ["StateStore", "MemoryStateStore", "SqliteStateStore", "StoredState"]

T = TypeVar("T")

StoredState = tuple[Any, int]
"""``(state, version)`` as a store returns it."""


class StateStore(ABC):
    """Persistent state of connection-agent instances. Implementations own their resources."""

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Acquire resources (called once by the server's lifespan)."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release resources. Idempotent."""

    @abstractmethod
    async def load(self, agent: str, instance: str) -> StoredState | None:
        """The saved ``(state, version)`` of one instance, or None if it never saved any."""

    @abstractmethod
    async def save(self, agent: str, instance: str, state: Any, version: int) -> None:
        """Replace the saved state of one instance.

        Raises:
            TypeError: ``state`` is not JSON-serializable.
        """


def _encode(state: Any) -> bytes:
    try:
        return orjson.dumps(state)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"agent state must be JSON-serializable: {exc}") from None


class MemoryStateStore(StateStore):
    """State in a dict (stored as JSON, so what a caller gets back is always a copy)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[bytes, int]] = {}

    async def load(self, agent: str, instance: str) -> StoredState | None:
        """The saved ``(state, version)``, or None."""
        await trio.lowlevel.checkpoint()
        row = self._rows.get((agent, instance))
        return (orjson.loads(row[0]), row[1]) if row else None

    async def save(self, agent: str, instance: str, state: Any, version: int) -> None:
        """Replace the saved state."""
        data = _encode(state)
        await trio.lowlevel.checkpoint()
        self._rows[(agent, instance)] = (data, version)


_SCHEMA = """CREATE TABLE IF NOT EXISTS agent_state (
    agent TEXT NOT NULL,
    instance TEXT NOT NULL,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (agent, instance)
)"""


class SqliteStateStore(StateStore):
    """State in an SQLite file; it survives a restart.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = SqliteDatabase(path, schema=[_SCHEMA], version=1, name="connection-agent state")
        self._run = self._db.run

    async def open(self) -> None:
        """Open the database (WAL mode) and create the table if needed."""
        await self._db.open()

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        await self._db.aclose()

    async def load(self, agent: str, instance: str) -> StoredState | None:
        """The saved ``(state, version)``, or None."""

        def read(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                "SELECT state, version FROM agent_state WHERE agent = ? AND instance = ?",
                (agent, instance),
            ).fetchone()

        row = await self._run(read)
        return (orjson.loads(row[0]), int(row[1])) if row else None

    async def save(self, agent: str, instance: str, state: Any, version: int) -> None:
        """Replace the saved state."""
        data = _encode(state)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO agent_state (agent, instance, version, state) "
                "VALUES (?, ?, ?, ?)",
                (agent, instance, version, data),
            )

        await self._run(write)
