"""The Starlette app every server test serves: an asyncpg_rs pool opened and closed by the
lifespan, against the throwaway server in ``$SERVER_TEST_DSN``.

``/loop`` answers with the module of the running loop's class and ``/db`` with a query's
result and the loop it ran on. On lifespan shutdown the pool is closed and what that left
is written as JSON to ``$SERVER_TEST_REPORT``, for the test to check after the server exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import asyncpg_rs


def _loop_module():
    return type(asyncio.get_running_loop()).__module__


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.pool = await asyncpg_rs.create_pool(
        os.environ["SERVER_TEST_DSN"], min_size=1, max_size=4
    )
    started_on = _loop_module()
    try:
        yield
    finally:
        pool = app.state.pool
        await pool.close()
        report = {
            "started_on": started_on,
            "closed_on": _loop_module(),
            "pool_closing": pool.is_closing(),
            "pool_size": pool.get_size(),
        }
        with open(os.environ["SERVER_TEST_REPORT"], "w") as f:
            json.dump(report, f)


async def loop_kind(request):
    return JSONResponse({"loop": _loop_module()})


async def db(request):
    value = await request.app.state.pool.fetchval("SELECT 40 + $1::int", 2)
    return JSONResponse({"value": value, "loop": _loop_module()})


app = Starlette(routes=[Route("/loop", loop_kind), Route("/db", db)], lifespan=lifespan)
