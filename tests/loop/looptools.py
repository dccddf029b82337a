"""Shared bits of the loop tests: the loops under test and loop-specific probes."""

from __future__ import annotations

import asyncio

import pytest

import asyncpg_rs

LOOP_KINDS = {"asyncio": asyncio.new_event_loop, "asyncpg_rs": asyncpg_rs.new_event_loop}

# for each module: async tests run on the stdlib loop and ours
LOOP_TEST_MARKS = [pytest.mark.any_loop, pytest.mark.loops(*LOOP_KINDS)]


def timer_count(loop):
    """Timers (cancelled ones included) the loop still holds."""
    if isinstance(loop, asyncpg_rs.Loop):
        return loop._timer_count()
    return len(loop._scheduled)
