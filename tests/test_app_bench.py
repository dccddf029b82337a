"""The database application of benchmarks/app_bench.py answers as TechEmpower's rules ask
(so its numbers measure the right work): each endpoint once, with the sequential and the
pipelined handlers, over asyncpg_rs's pool, on the stdlib loop and on ours."""

from __future__ import annotations

import html
import os
import re
import sys
import uuid

import aiohttp
import pytest
from aiohttp import web

import asyncpg_rs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import app_bench  # noqa: E402

pytestmark = pytest.mark.loops("asyncio", "asyncpg_rs")


async def _worlds(con, ids):
    rows = await con.fetch("SELECT id, randomnumber FROM world WHERE id = any($1)", list(ids))
    return {r[0]: r[1] for r in rows}


async def _check_worlds(con, worlds, n):
    assert len(worlds) == n
    assert all(set(w) == {"id", "randomNumber"} for w in worlds)
    assert all(1 <= w["id"] <= app_bench.WORLD_ROWS for w in worlds)
    stored = await _worlds(con, {w["id"] for w in worlds})
    assert {w["id"]: w["randomNumber"] for w in worlds} == stored


# pipelined: the handlers asyncpg_rs's pipelines allow (one round trip for the 20 reads)
@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
async def test_db_endpoints(pg, con, pipelined):
    schema = f"app_bench_{uuid.uuid4().hex[:8]}"
    await con.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
    pool = None
    runner = None
    try:
        await app_bench.create_schema(con)
        pool = await asyncpg_rs.create_pool(
            **pg.connect_kwargs(), min_size=2, max_size=2, server_settings={"search_path": schema}
        )
        assert len(await app_bench.warm_pool(pool, 2)) == 2
        runner = web.AppRunner(app_bench.db_app(pool, pipelined), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:

            async def get(path):
                async with http.get(base + path) as r:
                    assert r.status == 200, await r.text()
                    if r.content_type == "application/json":
                        return await r.json()
                    assert r.content_type == "text/html" and r.charset == "utf-8"
                    return await r.text()

            single = await get("/db")
            await _check_worlds(con, [single], 1)

            await _check_worlds(con, await get("/queries?queries=20"), 20)
            # TechEmpower's bounds: a missing, wrong or small count means 1, a large one 500
            bounds = (("", 1), ("?queries=foo", 1), ("?queries=0", 1), ("?queries=501", 500))
            for query, n in bounds:
                await _check_worlds(con, await get("/queries" + query), n)

            page = await get("/fortunes")
            assert page.startswith("<!DOCTYPE html><html><head><title>Fortunes</title>")
            cells = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", page)
            messages = [html.unescape(m) for _, m in cells]
            assert messages == sorted([*app_bench.FORTUNES, app_bench.ADDED_FORTUNE])
            assert ("0", app_bench.ADDED_FORTUNE) in cells
            assert cells[0][0] == "11"  # '<' sorts before every letter: the escaped script
            assert "<script>" not in page and "&lt;script&gt;alert(&quot;" in page
            assert "\u30d5\u30ec\u30fc\u30e0" in page

            before = await _worlds(con, range(1, app_bench.WORLD_ROWS + 1))
            updated = await get("/updates?queries=20")
            # the response carries the new numbers and they are what is stored now (a repeated
            # id keeps the later number, as the batch writes in response order per id)
            await _check_worlds(con, updated, 20)
            after = await _worlds(con, range(1, app_bench.WORLD_ROWS + 1))
            changed = {i for i in after if after[i] != before[i]}
            assert changed <= {w["id"] for w in updated}
    finally:
        if runner is not None:
            await runner.cleanup()
        if pool is not None:
            await pool.close()
        await con.execute(f"DROP SCHEMA {schema} CASCADE")
