"""Loop tests: one body, run on the stdlib loop and on asyncpg_rs's loop; both must pass.

Async tests carry ``looptools.LOOP_TEST_MARKS`` (they run on our loop even before it has
transports); synchronous tests take the ``loop`` fixture, a fresh loop of each kind.
"""

from __future__ import annotations

import asyncio

import pytest
from looptools import LOOP_KINDS

import asyncpg_rs


@pytest.fixture(params=list(LOOP_KINDS))
def loop(request):
    """A fresh event loop of each kind, closed after the test."""
    lp = LOOP_KINDS[request.param]()
    yield lp
    if not lp.is_closed():
        if not lp.is_running():
            lp.run_until_complete(lp.shutdown_asyncgens())
        lp.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def loop_kind(loop):
    return "asyncpg_rs" if isinstance(loop, asyncpg_rs.Loop) else "asyncio"
