"""Shared fixtures: every trio test must leave no task of ours running."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import pytest
import trio

from trioagents.testing import assert_no_leaked_tasks


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    yield
    # One scheduling round lets tasks that were cancelled on the way out finish unwinding.
    await trio.lowlevel.checkpoint()
    assert_no_leaked_tasks()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The leak check runs inside trio, so it applies to async (trio) tests only; plain
    # synchronous tests start no tasks.
    for item in items:
        fn = getattr(item, "function", None)
        if fn is not None and inspect.iscoroutinefunction(fn):
            item.add_marker(pytest.mark.usefixtures("_no_leaked_tasks"))
