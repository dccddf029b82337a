"""Run one library scenario in this process and print what it observed as JSON.

    python run_scenario.py <scenario> <dsn> <loop> <driver>

``driver`` is ``asyncpg_rs`` (installed as ``sys.modules["asyncpg"]`` before anything imports
asyncpg, the way an application swaps drivers) or ``asyncpg`` (the real one, the reference).
``loop`` is ``asyncio``, ``uvloop`` or ``asyncpg_rs``. A scenario is a module under
``scenarios/`` with ``async def run(dsn) -> list``; it asserts what must hold itself and
returns observations that the test compares with the reference driver's. The DSN is also in
``COMPAT_DSN`` while the scenario module is imported.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys


def main():
    scenario, dsn, loop, driver = sys.argv[1:5]
    if driver == "asyncpg_rs":
        import asyncpg_rs

        sys.modules["asyncpg"] = asyncpg_rs
    elif driver != "asyncpg":
        raise SystemExit(f"unknown driver {driver!r}")
    os.environ["COMPAT_DSN"] = dsn  # for scenarios that configure a library at import
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios"))
    module = importlib.import_module(scenario)
    import asyncpg

    assert (asyncpg.__name__ == "asyncpg_rs") == (driver == "asyncpg_rs"), asyncpg.__name__
    if loop == "asyncio":
        result = asyncio.run(module.run(dsn))
    elif loop == "uvloop":
        import uvloop

        result = uvloop.run(module.run(dsn))
    elif loop == "asyncpg_rs":
        import asyncpg_rs

        result = asyncpg_rs.run(module.run(dsn))
    else:
        raise SystemExit(f"unknown loop {loop!r}")
    print(json.dumps(result, default=str, sort_keys=True))


if __name__ == "__main__":
    main()
