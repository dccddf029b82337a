"""Event loop micro-benchmarks: asyncpg_rs's loop against the stdlib loop, uvloop and rloop.

Every (loop, repetition) runs in a fresh worker process, loops interleaved; the table shows
the median rate per loop and asyncpg_rs's ratio to each of the others (> 1: we are faster).
rloop is included when it is installed (``pip install rloop``).

    python benchmarks/loop_bench.py [--repeat 5] [--only call_soon,timers_fired]

A benchmark, not a test: it asserts nothing and prints numbers. The "sleep 1 ms" line is
bounded by the clock, so it compares CPU time per timer rather than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from _harness import new_loop

N_CALL_SOON = 1_000_000
N_TIMERS = 100_000
N_STEPS = 200_000
N_TASKS = 20_000
N_FUTURES = 200_000
N_THREADSAFE = 200_000
N_SLEEPERS = 1_000
SLEEP_ROUNDS = 20


def _chained_call_soon(loop, n, args):
    done = loop.create_future()
    count = [0]

    def cb(*_):
        count[0] += 1
        if count[0] < n:
            loop.call_soon(cb, *args)
        else:
            done.set_result(None)

    loop.call_soon(cb, *args)
    return done


def bench_call_soon(loop):
    t = time.perf_counter()
    loop.run_until_complete(_chained_call_soon(loop, N_CALL_SOON, ()))
    return N_CALL_SOON, time.perf_counter() - t


def bench_call_soon_args(loop):
    t = time.perf_counter()
    loop.run_until_complete(_chained_call_soon(loop, N_CALL_SOON // 2, (1, "two", 3.0)))
    return N_CALL_SOON // 2, time.perf_counter() - t


def bench_timers_fired(loop):
    done = loop.create_future()
    left = [N_TIMERS]

    def cb():
        left[0] -= 1
        if not left[0]:
            done.set_result(None)

    t = time.perf_counter()
    for i in range(N_TIMERS):
        loop.call_later((i % 1000) * 1e-6, cb)
    loop.run_until_complete(done)
    return N_TIMERS, time.perf_counter() - t


def bench_timers_cancelled(loop):
    async def main():
        for i in range(N_TIMERS):
            loop.call_later(10 + i * 1e-6, print).cancel()
            if i % 1000 == 0:
                await asyncio.sleep(0)

    t = time.perf_counter()
    loop.run_until_complete(main())
    return N_TIMERS, time.perf_counter() - t


def bench_sleep0(loop):
    async def main():
        for _ in range(N_STEPS):
            await asyncio.sleep(0)

    t = time.perf_counter()
    loop.run_until_complete(main())
    return N_STEPS, time.perf_counter() - t


def bench_tasks_gather(loop):
    async def leaf(i):
        return i

    async def main():
        for _ in range(N_TASKS // 1000):
            await asyncio.gather(*[loop.create_task(leaf(i)) for i in range(1000)])

    t = time.perf_counter()
    loop.run_until_complete(main())
    return N_TASKS, time.perf_counter() - t


def bench_future_roundtrip(loop):
    async def main():
        for i in range(N_FUTURES):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            await fut

    t = time.perf_counter()
    loop.run_until_complete(main())
    return N_FUTURES, time.perf_counter() - t


def bench_threadsafe(loop):
    done = loop.create_future()
    count = [0]

    def cb():
        count[0] += 1
        if count[0] == N_THREADSAFE:
            done.set_result(None)

    def producer():
        call = loop.call_soon_threadsafe
        for _ in range(N_THREADSAFE):
            call(cb)

    t = time.perf_counter()
    thread = threading.Thread(target=producer)
    thread.start()
    loop.run_until_complete(done)
    thread.join()
    return N_THREADSAFE, time.perf_counter() - t


def bench_sleep_1ms(loop):
    async def sleeper():
        for _ in range(SLEEP_ROUNDS):
            await asyncio.sleep(0.001)

    async def main():
        await asyncio.gather(*[sleeper() for _ in range(N_SLEEPERS)])

    cpu = time.process_time()
    loop.run_until_complete(main())
    return N_SLEEPERS * SLEEP_ROUNDS, time.process_time() - cpu


BENCHES = {
    "call_soon": ("1M chained call_soon", bench_call_soon),
    "call_soon_args": ("500k chained call_soon(cb, 3 args)", bench_call_soon_args),
    "timers_fired": ("100k call_later fired", bench_timers_fired),
    "timers_cancelled": ("100k call_later + cancel", bench_timers_cancelled),
    "sleep0": ("200k sleep(0) task steps", bench_sleep0),
    "tasks_gather": ("20k create_task + gather", bench_tasks_gather),
    "future_roundtrip": ("200k future round trips", bench_future_roundtrip),
    "threadsafe": ("200k call_soon_threadsafe, 1 thread", bench_threadsafe),
    "sleep_1ms": ("1000 tasks x 20 sleep(1ms), CPU time", bench_sleep_1ms),
}


def worker(loop_name, benches):
    out = {}
    for name in benches:
        loop = new_loop(loop_name)
        asyncio.set_event_loop(loop)
        try:
            ops, seconds = BENCHES[name][1](loop)
            out[name] = ops / seconds
        except Exception as exc:  # a loop that lacks or breaks a feature
            out[name] = None
            print(f"{loop_name}/{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    print(json.dumps(out))


def available_loops():
    loops = ["asyncio"]
    for mod in ("uvloop", "rloop"):
        try:
            __import__(mod)
            loops.append(mod)
        except ImportError:
            pass
    loops.append("asyncpg_rs")
    return loops


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    benches = [b for b in args.only.split(",") if b]
    if args.worker:
        worker(args.worker, benches)
        return
    loops = available_loops()
    results = {(loop, b): [] for loop in loops for b in benches}
    for rep in range(args.repeat):
        order = loops if rep % 2 == 0 else list(reversed(loops))
        for loop in order:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", loop, "--only", ",".join(benches)],
                capture_output=True,
                text=True,
                cwd=os.path.dirname(os.path.abspath(__file__)),
            )
            if proc.returncode != 0:
                print(
                    f"{loop}: worker failed ({proc.returncode}): {proc.stderr.strip()[-300:]}",
                    file=sys.stderr,
                )
                continue
            if proc.stderr.strip():
                print(proc.stderr.strip(), file=sys.stderr)
            for b, rate in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                if rate is not None:
                    results[(loop, b)].append(rate)
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    others = [loop for loop in loops if loop != "asyncpg_rs"]
    header = f"{'benchmark':40}" + "".join(f"{loop:>12}" for loop in loops)
    header += "".join(f"{'vs ' + o:>12}" for o in others)
    print(f"median ops/s over {args.repeat} runs (Python {sys.version.split()[0]})")
    print(header)
    for b in benches:
        med = {
            loop: statistics.median(results[(loop, b)]) if results[(loop, b)] else None
            for loop in loops
        }
        row = f"{BENCHES[b][0]:40}"
        row += "".join(f"{med[loop]:>12,.0f}" if med[loop] else f"{'n/a':>12}" for loop in loops)
        ours = med["asyncpg_rs"]
        for o in others:
            row += f"{ours / med[o]:>11.2f}x" if ours and med[o] else f"{'n/a':>12}"
        print(row)


if __name__ == "__main__":
    main()
