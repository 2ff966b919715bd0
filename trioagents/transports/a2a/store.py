"""A2A task stores: where tasks live between requests and across restarts.

Two implementations of one interface (:class:`TaskStore`):

* :class:`MemoryTaskStore` — a dict; gone when the process exits.
* :class:`SqliteTaskStore` — stdlib ``sqlite3`` in WAL mode. The one connection is used from a
  worker thread (``trio.to_thread.run_sync``) by one caller at a time under a ``trio.Lock``;
  the thread is never abandoned on cancellation, so a write either happens or did not start.

Both store the task as JSON (:func:`~trioagents.protocols.a2a.task_to_json`), so what a caller
gets back is always a copy, never the object a running turn keeps changing.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..._sqlite import SqliteDatabase
from ...protocols.a2a import TERMINAL_STATES, Task, task_from_json, task_to_json

__all__ = ["TaskStore", "MemoryTaskStore", "SqliteTaskStore", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
"""Version of the SQLite schema (``PRAGMA user_version``)."""

T = TypeVar("T")


class TaskStore(ABC):
    """Where A2A tasks are kept. Methods are async; implementations own their resources."""

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Acquire resources (called once by the server's lifespan)."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release resources. Idempotent."""

    @abstractmethod
    async def save(self, task: Task) -> None:
        """Insert or replace ``task``."""

    @abstractmethod
    async def get(self, task_id: str) -> Task | None:
        """The task called ``task_id`` (a copy), or None."""

    @abstractmethod
    async def list_tasks(
        self, *, agent: str, context_id: str | None = None, limit: int = 50
    ) -> list[Task]:
        """The newest tasks of ``agent`` (optionally of one context), newest first."""

    @abstractmethod
    async def list_states(self, states: Iterable[str]) -> list[Task]:
        """Every task whose state is one of ``states``."""

    @abstractmethod
    async def cleanup(self, *, older_than: float, max_finished: int) -> int:
        """Delete finished tasks last updated before ``older_than`` (Unix s), then the oldest
        finished ones beyond ``max_finished``. Returns how many were deleted."""


class MemoryTaskStore(TaskStore):
    """Tasks in a dict (serialized, so readers get copies)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, str, str, float, bytes]] = {}

    async def save(self, task: Task) -> None:
        """Insert or replace ``task``."""
        await trio.lowlevel.checkpoint()
        self._rows[task.id] = (
            task.agent,
            task.context_id,
            task.state,
            task.updated_at,
            task_to_json(task),
        )

    async def get(self, task_id: str) -> Task | None:
        """The task called ``task_id`` (a copy), or None."""
        await trio.lowlevel.checkpoint()
        row = self._rows.get(task_id)
        return task_from_json(row[4]) if row else None

    async def list_tasks(
        self, *, agent: str, context_id: str | None = None, limit: int = 50
    ) -> list[Task]:
        """The newest tasks of ``agent`` (optionally of one context), newest first."""
        await trio.lowlevel.checkpoint()
        rows = [
            r
            for r in self._rows.values()
            if r[0] == agent and (context_id is None or r[1] == context_id)
        ]
        rows.sort(key=lambda r: r[3], reverse=True)
        return [task_from_json(r[4]) for r in rows[:limit]]

    async def list_states(self, states: Iterable[str]) -> list[Task]:
        """Every task whose state is one of ``states``."""
        await trio.lowlevel.checkpoint()
        wanted = set(states)
        return [task_from_json(r[4]) for r in self._rows.values() if r[2] in wanted]

    async def cleanup(self, *, older_than: float, max_finished: int) -> int:
        """Delete expired finished tasks and the oldest beyond ``max_finished``."""
        await trio.lowlevel.checkpoint()
        finished = sorted(
            ((r[3], tid) for tid, r in self._rows.items() if r[2] in TERMINAL_STATES),
            reverse=True,
        )
        doomed = [
            tid for i, (ts, tid) in enumerate(finished) if ts < older_than or i >= max_finished
        ]
        for tid in doomed:
            del self._rows[tid]
        return len(doomed)


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        context_id TEXT NOT NULL,
        state TEXT NOT NULL,
        finished INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS tasks_agent ON tasks (agent, context_id, updated_at)",
    "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished, updated_at)",
]


class SqliteTaskStore(TaskStore):
    """Tasks in an SQLite file (WAL mode); they survive a restart.

    Args:
        path: the database file (created if missing), or ``":memory:"``.

    Raises:
        RuntimeError: on :meth:`open`, when the file has a newer schema than this code knows.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = SqliteDatabase(path, schema=_SCHEMA, version=SCHEMA_VERSION, name="A2A task")
        self._run = self._db.run

    async def open(self) -> None:
        """Open the database, set WAL mode and create or check the schema."""
        await self._db.open()

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        await self._db.aclose()

    async def save(self, task: Task) -> None:
        """Insert or replace ``task``."""
        row = (
            task.id,
            task.agent,
            task.context_id,
            task.state,
            int(task.finished),
            task.updated_at,
            task_to_json(task),
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        await self._run(write)

    async def get(self, task_id: str) -> Task | None:
        """The task called ``task_id`` (a copy), or None."""

        def read(conn: sqlite3.Connection) -> Any:
            return conn.execute("SELECT data FROM tasks WHERE id = ?", (task_id,)).fetchone()

        row = await self._run(read)
        return task_from_json(row[0]) if row else None

    async def list_tasks(
        self, *, agent: str, context_id: str | None = None, limit: int = 50
    ) -> list[Task]:
        """The newest tasks of ``agent`` (optionally of one context), newest first."""

        def read(conn: sqlite3.Connection) -> list[Any]:
            if context_id is None:
                return conn.execute(
                    "SELECT data FROM tasks WHERE agent = ? ORDER BY updated_at DESC LIMIT ?",
                    (agent, limit),
                ).fetchall()
            return conn.execute(
                "SELECT data FROM tasks WHERE agent = ? AND context_id = ? "
                "ORDER BY updated_at DESC LIMIT ?",
                (agent, context_id, limit),
            ).fetchall()

        return [task_from_json(r[0]) for r in await self._run(read)]

    async def list_states(self, states: Iterable[str]) -> list[Task]:
        """Every task whose state is one of ``states``."""
        wanted = sorted(set(states))

        def read(conn: sqlite3.Connection) -> list[Any]:
            marks = ",".join("?" * len(wanted))
            return conn.execute(
                f"SELECT data FROM tasks WHERE state IN ({marks})", wanted
            ).fetchall()

        return [task_from_json(r[0]) for r in await self._run(read)] if wanted else []

    async def cleanup(self, *, older_than: float, max_finished: int) -> int:
        """Delete expired finished tasks and the oldest beyond ``max_finished``."""

        def delete(conn: sqlite3.Connection) -> int:
            with conn:
                n = conn.execute(
                    "DELETE FROM tasks WHERE finished = 1 AND updated_at < ?", (older_than,)
                ).rowcount
                n += conn.execute(
                    "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE finished = 1 "
                    "ORDER BY updated_at DESC LIMIT -1 OFFSET ?)",
                    (max_finished,),
                ).rowcount
            return n

        return await self._run(delete)
