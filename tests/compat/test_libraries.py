"""Libraries written for asyncpg, run unchanged with ``sys.modules["asyncpg"] = asyncpg_rs``.

Each scenario (``scenarios/<library>.py``) runs in its own process, as an application would
(the alias must be in place before the library imports asyncpg): once with the real asyncpg on
the stdlib loop, the reference, and then with asyncpg_rs on every loop. The scenario asserts
what must hold; the test also requires asyncpg_rs's observations (rows, error classes and
SQLSTATEs, tracing spans) to equal the reference's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = sorted(f[:-3] for f in os.listdir(os.path.join(HERE, "scenarios")) if f.endswith(".py"))
LOOPS = ("asyncio", "uvloop", "asyncpg_rs")

_reference: dict[str, object] = {}


def _run(scenario, pg, loop, driver):
    env = dict(os.environ)
    if not getattr(pg, "external", False):
        # plain TCP (the libraries spell TLS options in DSNs differently; the environment
        # is common ground), so that on our loop the driver takes its native transport path
        env["PGSSLMODE"] = "disable"
    dsn = pg.dsn()
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "run_scenario.py"), scenario, dsn, loop, driver],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    if proc.returncode:
        pytest.fail(f"{scenario} with {driver} on {loop} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_library_runs_unchanged(pg, scenario, loop):
    if scenario not in _reference:
        _reference[scenario] = _run(scenario, pg, "asyncio", "asyncpg")
    assert _run(scenario, pg, loop, "asyncpg_rs") == _reference[scenario]
