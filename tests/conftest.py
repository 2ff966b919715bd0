"""Shared fixtures: every test is bounded in time and must leave no task of ours running."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from trioagents.testing import assert_no_leaked_tasks


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    yield
    # One scheduling round lets tasks that were cancelled on the way out finish unwinding.
    await trio.lowlevel.checkpoint()
    assert_no_leaked_tasks()
