"""The embedded SQLite database every durable store uses (A2A tasks, connection-agent state…).

stdlib ``sqlite3`` is blocking, so each call runs in a worker thread
(``trio.to_thread.run_sync``) and one lock serialises them: one connection, used by one thread
at a time. WAL mode lets readers of other processes go on while we write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

__all__ = ["SqliteDatabase"]

T = TypeVar("T")


class SqliteDatabase:
    """One SQLite file with a versioned schema, used from trio.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        schema: statements that create the schema (``CREATE … IF NOT EXISTS``).
        version: the schema version written to ``PRAGMA user_version``.
        name: what the database holds, for error messages.

    Raises:
        RuntimeError: on :meth:`open`, when the file has a newer schema than this code knows.
    """

    def __init__(self, path: str | Path, *, schema: Sequence[str], version: int, name: str) -> None:
        self.path = str(path)
        self._schema = tuple(schema)
        self._version = version
        self._name = name
        self._conn: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found > self._version:
                raise RuntimeError(
                    f"{self.path} has {self._name} schema {found}; this trioagents knows up to "
                    f"{self._version}"
                )
            with conn:
                for statement in self._schema:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={self._version}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        """Open the file and create or check the schema. Idempotent."""
        async with self._lock:
            if self._conn is None:
                self._conn = await trio.to_thread.run_sync(self._connect)

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a worker thread, one call at a time.

        Raises:
            RuntimeError: the database is not open.
        """
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"the {self._name} database is not open")
            return await trio.to_thread.run_sync(fn, conn)
