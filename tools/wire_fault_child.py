"""The driver's side of a child-process case of ``tests/test_wire_faults.py``.

    python tools/wire_fault_child.py LOOP CONNECT_KWARGS_JSON QUERY

Connects (through the test's relay), runs QUERY once with a bounded wait, and prints one JSON
line: the exception's class name, whether the connection closed or still answers, how long
the failing call took. Kept apart from the test module so a child imports only the driver
(and its loop): dozens of them run per suite.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg_rs

BOUND = 5.0


async def run(kwargs, query):
    con = await asyncpg_rs.connect(**kwargs, ssl=False, timeout=BOUND)
    start = time.monotonic()
    error = None
    try:
        await asyncio.wait_for(con.fetch(query), BOUND)
    except BaseException as e:  # reported to the parent, which judges it
        error = type(e).__name__
    seconds = time.monotonic() - start
    for _ in range(100):
        if con.is_closed():
            break
        await asyncio.sleep(0.01)
    usable = False
    if not con.is_closed():
        try:
            usable = await asyncio.wait_for(con.fetchval("SELECT 2"), BOUND) == 2
        except Exception:
            usable = False
    closed = con.is_closed()
    con.terminate()
    return {"error": error, "closed": closed, "usable": usable, "seconds": seconds}


def main():
    loop_name, kwargs, query = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    elif loop_name == "asyncpg_rs":
        loop = asyncpg_rs.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        print(json.dumps(loop.run_until_complete(run(kwargs, query))))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
