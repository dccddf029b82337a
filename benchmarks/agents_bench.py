"""APM agents' cost per query: asyncpg_rs (aliased as asyncpg) against asyncpg, in one run.

Each agent is set up exactly as its compat scenario sets it up (``tests/compat/scenarios/
apm_<agent>.py``: the agent's own integration, its events kept in memory, no network), in a
fresh worker process per cell. A cell runs ``fetchval("SELECT $1::int", i)`` one query at a
time inside the agent's transactions (a new transaction every ``--per-txn`` queries, so no
agent hits its spans-per-transaction cap) and reports the worker's CPU microseconds per query
(all its threads, so an agent's background work counts; CPU rather than wall time, so that
other load on the machine and the server's own time stay out of it). The table shows
the median per driver, each agent's overhead over no agent on the same driver, and the ratio
asyncpg_rs / asyncpg.

    python benchmarks/agents_bench.py                    # a throwaway cluster, stdlib loop
    python benchmarks/agents_bench.py --loop asyncpg_rs --queries 4000 --repeat 5

(``--loop asyncpg_rs`` runs asyncpg on uvloop: each driver on its fastest loop.)
This is a benchmark, not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time

from _harness import interleaved, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
COMPAT = os.path.join(os.path.dirname(HERE), "tests", "compat")
AGENTS = ("none", "sentry", "ddtrace", "newrelic", "elastic")


def _transaction_factory(agent):
    """Set the agent up (by importing its compat scenario) and return a context-manager
    factory for one of its transactions."""
    sys.path[:0] = [COMPAT, os.path.join(COMPAT, "scenarios")]
    if agent == "none":
        return contextlib.nullcontext
    if agent == "sentry":
        import apm_sentry  # noqa: F401  (sets the SDK up)
        import sentry_sdk

        return lambda: sentry_sdk.start_transaction(op="task", name="bench")
    if agent == "ddtrace":
        import apm_ddtrace

        return lambda: apm_ddtrace.tracer.trace("bench")
    if agent == "newrelic":
        import apm_newrelic
        import newrelic.agent

        return lambda: newrelic.agent.BackgroundTask(apm_newrelic.application, name="bench")
    if agent == "elastic":
        import apm_elastic

        @contextlib.contextmanager
        def transaction():
            apm_elastic.client.begin_transaction("bench")
            try:
                yield
            finally:
                apm_elastic.client.end_transaction("bench", "success")
                apm_elastic.EVENTS.clear()

        return transaction
    raise SystemExit(f"unknown agent {agent!r}")


def worker(dsn, driver, loop_name, agent, queries, per_txn):
    if driver == "asyncpg_rs":
        import asyncpg_rs

        sys.modules["asyncpg"] = asyncpg_rs
    transaction = _transaction_factory(agent)
    import asyncpg

    async def main():
        con = await asyncpg.connect(dsn)
        try:
            for i in range(200):  # warm up: statement cache, agent's first-call paths
                await con.fetchval("SELECT $1::int", i)
            done = 0
            started = time.process_time()
            while done < queries:
                with transaction():
                    for i in range(min(per_txn, queries - done)):
                        await con.fetchval("SELECT $1::int", i)
                done += per_txn
            return (time.process_time() - started) / queries * 1e6
        finally:
            await con.close()

    loop = new_loop("uvloop" if loop_name == "asyncpg_rs" and driver == "asyncpg" else loop_name)
    asyncio.set_event_loop(loop)
    try:
        print(round(loop.run_until_complete(main()), 2))
    finally:
        loop.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn")
    ap.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop", "asyncpg_rs"))
    ap.add_argument("--agents", default=",".join(AGENTS))
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--per-txn", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", nargs=6)
    args = ap.parse_args()
    if args.worker:
        dsn, driver, loop_name, agent, queries, per_txn = args.worker
        worker(dsn, driver, loop_name, agent, int(queries), int(per_txn))
        return
    agents = args.agents.split(",")
    script = os.path.abspath(__file__)
    # plain TCP, as the compat tests use: the agents' cost is the point, not TLS's
    os.environ.setdefault("PGSSLMODE", "disable")
    with server_dsn(args.dsn) as dsn:

        def measure(driver, loop, agent):
            r = run_worker(script, [dsn, driver, loop, agent, args.queries, args.per_txn])
            return r if isinstance(r, dict) else float(r)

        results = interleaved(args.repeat, agents, [args.loop], measure, width=10)
    print(f"\nclient CPU µs per query (median of {args.repeat}), loop {args.loop}")
    header = ("agent", "asyncpg", "+agent", "asyncpg_rs", "+agent", "rs/pg")
    print("{:10} {:>9} {:>8} {:>11} {:>8} {:>6}".format(*header))
    base = {}
    for agent in agents:
        row = {}
        for driver in ("asyncpg", "asyncpg_rs"):
            vals = [v for v in results[(agent, args.loop, driver)] if isinstance(v, float)]
            row[driver] = statistics.median(vals) if vals else float("nan")
            if agent == "none":
                base[driver] = row[driver]
        pg, rs = row["asyncpg"], row["asyncpg_rs"]
        print(
            f"{agent:10} {pg:9.1f} {pg - base.get('asyncpg', pg):8.1f} "
            f"{rs:11.1f} {rs - base.get('asyncpg_rs', rs):8.1f} {rs / pg:6.2f}"
        )


if __name__ == "__main__":
    main()
