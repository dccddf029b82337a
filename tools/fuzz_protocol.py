"""Property-based fuzzing of the driver's protocol core: framing, dispatch and every decoder.

A real ``asyncpg_rs._native.PGProtocol`` is driven through its Python face with a fake
transport that collects what it writes: a scripted startup, then ``prepare`` answered with a
RowDescription whose columns are of random builtin types (every type the driver has a codec
for), then ``bind_execute`` answered with generated DataRows (random, width-plausible and
structured values: array, numeric and range headers) and, for some examples, a stream mutated
at byte level (flips, cuts, insertions, duplicated messages). Checked for each example:

- no ``PanicException`` (a Rust panic turned into a Python exception);
- nothing raised out of ``data_received`` (a protocol that raises there kills its transport);
- the operation's future, when done, failed only with the driver's classes
  (``InterfaceError``, ``InternalClientError`` such as ``ProtocolError``, ``PostgresError``);
- no hang: each example must finish within ``--hang-seconds`` (a watchdog ends the process
  otherwise).

The examples run in child processes; one that dies (the hang watchdog, an abort) is a finding
named by the example it was running (written to ``--example-file`` before each run), and the
next child goes on with the next seed. Two engines: hypothesis (shrinks what it finds) and a
seeded PRNG over the same shapes (about thirty times the executions); ``--engine both``
splits the time between them.

Inputs whose framing announces a message of ``--huge`` bytes or more are skipped unless
``--huge-lengths`` is given: until the protocol bounds message lengths before reserving
buffer space for them, such an input aborts the process (an allocation failure), which the
relay tests in ``tests/test_wire_faults.py`` already show.

    .venv/bin/python tools/fuzz_protocol.py --seconds 600      # prints executions, findings

Exit status 1 when something was found. ``tests/test_protocol_fuzz.py`` runs a few seconds
of it in the default suite.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import traceback

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncpg_rs
from asyncpg_rs import _native, exceptions

DRIVER_ERRORS = (
    exceptions.InterfaceError,
    exceptions.InternalClientError,
    exceptions.PostgresError,
)
HUGE = 1 << 28
# Arrays with a zero-length dimension after (or among) long ones make the array decoder
# allocate the outer levels in full before it meets the empty one (2**31 lists: a hang, or a
# MemoryError under a memory limit); found by this harness and reported. Generated only with
# --zero-dims until that is fixed, so the run can find other things.
ZERO_DIMS = {"on": False}


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.encode() + b"\0"


STARTUP_ANSWER = b"".join(
    [
        message(b"R", struct.pack("!i", 0)),
        message(b"S", _cstr("server_version") + _cstr("16.0")),
        message(b"S", _cstr("client_encoding") + _cstr("UTF8")),
        message(b"S", _cstr("integer_datetimes") + _cstr("on")),
        message(b"S", _cstr("DateStyle") + _cstr("ISO, MDY")),
        message(b"K", struct.pack("!ii", 4242, 1234)),
        message(b"Z", b"I"),
    ]
)


class FakeTransport:
    """Collects what the protocol writes; closing is only recorded."""

    def __init__(self):
        self.written = 0
        self.closed = False
        self._protocol = None

    def write(self, data):
        self.written += len(data)

    def writelines(self, parts):
        for p in parts:
            self.write(p)

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_reading(self):
        return not self.closed

    def get_extra_info(self, name, default=None):
        return default

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def get_write_buffer_size(self):
        return 0


def builtin_type_oids():
    """Every type OID below 20000 the driver decodes without introspection."""
    loop = asyncio.new_event_loop()
    try:
        proto = _native.PGProtocol(loop, "fuzz", "fuzz", None, {})
        return [oid for oid in range(1, 20000) if proto.has_codec(oid)]
    finally:
        loop.close()


# ---------------------------------------------------------------- generated answers


def row_description(oids):
    body = struct.pack("!h", len(oids))
    for i, oid in enumerate(oids):
        body += _cstr(f"c{i}") + struct.pack("!ihihih", 0, 0, oid, -1, -1, 0)
    return message(b"T", body)


def data_row(values, count=None):
    out = [struct.pack("!h", len(values) if count is None else count)]
    for v in values:
        out.append(struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v)
    return message(b"D", b"".join(out))


def _dims(ndim):
    dims = [1, 2, 3, 5, -1, 1 << 16, 0x7FFFFFFF]
    return dims + [0] if ndim <= 1 or ZERO_DIMS["on"] else dims


@st.composite
def array_value(draw):
    ndim = draw(st.sampled_from([0, 1, 1, 2, 3, 6, 7, -1, 0x7FFFFFFF]))
    head = struct.pack(
        "!iii",
        ndim,
        draw(st.sampled_from([0, 1, 2])),
        draw(st.sampled_from([23, 25, 20, 0, 701])),
    )
    for _ in range(max(0, min(ndim, 7))):
        dim = draw(st.sampled_from(_dims(ndim)))
        head += struct.pack("!ii", dim, draw(st.sampled_from([1, 0, -5, 0x7FFFFFFF])))
    elements = draw(st.lists(element_value(), max_size=8))
    for e in elements:
        head += struct.pack("!i", -1) if e is None else struct.pack("!i", len(e)) + e
    return head


@st.composite
def numeric_value(draw):
    ndigits = draw(st.integers(-2, 12))
    body = struct.pack(
        "!hhHh",
        ndigits,
        draw(st.integers(-32768, 32767)),
        draw(st.sampled_from([0, 0x4000, 0xC000, 0xD000, 0xF000, 0x1234])),
        draw(st.integers(-5, 16383)),
    )
    digits = draw(st.lists(st.integers(0, 20000), max_size=max(0, ndigits) + 2))
    return body + b"".join(struct.pack("!H", d) for d in digits)


@st.composite
def range_value(draw):
    flags = draw(st.integers(0, 255))
    bounds = draw(st.lists(element_value(), max_size=3))
    out = bytes([flags])
    for b in bounds:
        out += struct.pack("!i", -1) if b is None else struct.pack("!i", len(b)) + b
    return out


@st.composite
def element_value(draw):
    return draw(
        st.one_of(
            st.none(),
            st.binary(max_size=16).map(bytes),
            st.sampled_from([1, 2, 4, 8, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        )
    )


def column_value():
    return st.one_of(
        st.none(),
        st.binary(max_size=40),
        st.sampled_from([1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32]).flatmap(
            lambda n: st.binary(min_size=n, max_size=n)
        ),
        st.text(max_size=20).map(lambda s: s.encode()),
        array_value(),
        numeric_value(),
        range_value(),
        st.binary(min_size=1, max_size=20).map(lambda b: b"\x01" + b),  # jsonb version 1
    )


def announced_lengths(stream):
    """The lengths the framing announces, read as the protocol reads them (a message after
    another), up to the first incomplete one."""
    at = 0
    while at + 5 <= len(stream):
        length = struct.unpack_from("!I", stream, at + 1)[0]
        yield length
        if length < 4:
            return
        at += 1 + length


# ---------------------------------------------------------------- one example


class Finding(Exception):
    pass


class Harness:
    def __init__(self, huge_lengths=False, hang_seconds=10.0, example_file=None):
        self.loop = asyncio.new_event_loop()
        # failed futures nobody awaits (a fake connection's waiters) would be logged
        self.loop.set_exception_handler(lambda loop, context: None)
        self.oids = builtin_type_oids()
        self.huge_lengths = huge_lengths
        self.hang_seconds = hang_seconds
        self.executions = 0
        self.skipped_huge = 0
        # each example is written here before it runs: what a hang or an abort leaves behind
        self.example_file = open(example_file, "w") if example_file else None  # noqa: SIM115
        self.outcomes = {}

    def close(self):
        self.loop.close()
        if self.example_file is not None:
            self.example_file.close()

    def _feed(self, proto, data, chunking):
        """Hand ``data`` over in pieces; anything raised out of data_received is a finding."""
        at = 0
        for size in chunking:
            if at >= len(data):
                break
            piece, at = data[at : at + size], at + size
            self._deliver(proto, piece)
        if at < len(data):
            self._deliver(proto, data[at:])

    def _deliver(self, proto, piece):
        try:
            proto.data_received(piece)
        except BaseException as e:
            name = f"{type(e).__module__}.{type(e).__name__}"
            raise Finding(f"data_received raised {name}: {e!r}") from e

    def run(self, oids, rows, stream_mutation, chunking):
        """One example; raises Finding when a property does not hold."""
        if self.example_file is not None:
            f = self.example_file
            f.seek(0)
            f.write(
                f"oids={oids} rows={[r.hex() for r in rows]} "
                f"mutation={stream_mutation!r} chunking={chunking}\n"
            )
            f.truncate()
            f.flush()
        faulthandler.dump_traceback_later(self.hang_seconds, exit=True)
        try:
            self._run(oids, rows, stream_mutation, chunking)
        finally:
            faulthandler.cancel_dump_traceback_later()

    def _run(self, oids, rows, stream_mutation, chunking):
        answer = b"".join([message(b"2", b""), *rows, message(b"C", b"SELECT 1\0")])
        answer += message(b"Z", b"I")
        if stream_mutation is not None:
            answer = stream_mutation(answer)
        if not self.huge_lengths and any(n >= HUGE for n in announced_lengths(answer)):
            self.skipped_huge += 1
            return
        self.executions += 1
        transport = FakeTransport()
        proto = _native.PGProtocol(self.loop, "fuzz", "fuzz", None, {})
        proto.connection_made(transport)
        self._deliver(proto, STARTUP_ANSWER)
        startup = proto.startup_waiter()
        assert startup.done() and startup.exception() is None, startup
        prepared = proto.prepare("s", "SELECT fuzz")
        self._deliver(
            proto,
            b"".join(
                [
                    message(b"1", b""),
                    message(b"t", struct.pack("!h", 0)),
                    row_description(oids),
                    message(b"Z", b"I"),
                ]
            ),
        )
        if not prepared.done():
            raise Finding("prepare's future is pending after its whole answer")
        self._check_future(prepared, "prepare")
        if prepared.exception() is not None:
            return
        state = prepared.result()
        fut = proto.bind_execute(state, [], "", 0, None, True)
        self._feed(proto, answer, chunking)
        if fut.done():
            outcome = self._check_future(fut, "bind_execute")
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        else:
            self.outcomes["pending"] = self.outcomes.get("pending", 0) + 1
        proto.connection_lost(None)

    def _check_future(self, fut, what):
        if fut.cancelled():
            raise Finding(f"{what}: future cancelled")
        exc = fut.exception()
        if exc is None:
            repr(fut.result())  # the rows must be printable
            return "rows"
        if type(exc).__name__ == "PanicException":
            raise Finding(f"{what}: panic: {exc!r}")
        if not isinstance(exc, DRIVER_ERRORS):
            detail = "".join(traceback.format_exception(exc)[-3:])
            raise Finding(f"{what}: {type(exc).__module__}.{type(exc).__name__}: {detail}")
        return type(exc).__name__


def examples(harness):
    """The hypothesis strategy of one example's arguments."""
    columns = st.lists(st.sampled_from(harness.oids), min_size=1, max_size=6)

    @st.composite
    def example(draw):
        oids = draw(columns)
        rows = []
        for _ in range(draw(st.integers(0, 4))):
            values = [draw(column_value()) for _ in oids]
            count = None
            if draw(st.integers(0, 9)) == 0:
                count = draw(st.sampled_from([0, len(oids) - 1, len(oids) + 1, -1, 0x7FFF]))
            rows.append(data_row(values, count))
        mutation = None
        if draw(st.integers(0, 3)) == 0:
            mutation_seed = draw(st.randoms(use_true_random=False))
            mutation = _ByteMutation(mutation_seed.random())
        chunking = draw(st.lists(st.integers(1, 64), max_size=6))
        return oids, rows, mutation, chunking

    return example()


class _ByteMutation:
    """A deterministic byte-level mutation of a whole answer (seeded, so hypothesis can
    replay and shrink the example that used it)."""

    def __init__(self, seed):
        self.seed = seed

    def __repr__(self):
        return f"_ByteMutation({self.seed!r})"

    def __call__(self, stream):
        rnd = random.Random(self.seed)
        data = bytearray(stream)
        for _ in range(rnd.randint(1, 4)):
            if not data:
                break
            at = rnd.randrange(len(data))
            kind = rnd.choice(["flip", "cut", "insert", "delete", "duplicate"])
            if kind == "flip":
                data[at] ^= rnd.randint(1, 255)
            elif kind == "cut":
                del data[at:]
            elif kind == "insert":
                data[at:at] = rnd.randbytes(rnd.randint(1, 12))
            elif kind == "delete":
                del data[at : at + rnd.randint(1, 8)]
            else:
                end = min(len(data), at + rnd.randint(1, 40))
                data[at:at] = data[at:end]
        return bytes(data)


def fuzz(
    seconds,
    huge_lengths=False,
    hang_seconds=10.0,
    batch=200,
    out=sys.stdout,
    progress=None,
    example_file=None,
):
    """Run batches of examples until ``seconds`` have passed; returns (harness, findings)."""
    harness = Harness(huge_lengths, hang_seconds, example_file)
    findings = {}

    @settings(
        max_examples=batch,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(examples(harness))
    def check(example):
        oids, rows, mutation, chunking = example
        harness.run(oids, rows, mutation, chunking)

    stop = time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            if progress:
                progress(harness, findings)
            try:
                check()
            except Finding as e:
                key = _finding_key(e)
                if key not in findings:
                    findings[key] = _shrunk_example(e)
                    print(f"FINDING: {e}\n  example: {findings[key]}", file=out, flush=True)
    finally:
        harness.close()
    return harness, findings


def _random_element(rnd):
    k = rnd.randrange(3)
    if k == 0:
        return None
    if k == 1:
        return rnd.randbytes(rnd.randint(0, 16))
    return rnd.randbytes(rnd.choice([1, 2, 4, 8, 16]))


def _random_value(rnd):
    """A column value, as ``column_value()`` draws them, from a plain PRNG (no shrinking,
    a hundred times the rate)."""
    k = rnd.randrange(8)
    if k == 0:
        return None
    if k == 1:
        return rnd.randbytes(rnd.randint(0, 40))
    if k == 2:
        return rnd.randbytes(rnd.choice([1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32]))
    if k == 3:
        return rnd.choice(["", "x", "é", "日本", "\x00", "a\tb", "{1,2}", "[1,2)", "NaN"]).encode()
    if k == 4:
        ndim = rnd.choice([0, 1, 1, 2, 3, 6, 7, -1, 0x7FFFFFFF])
        out = struct.pack("!iii", ndim, rnd.choice([0, 1, 2]), rnd.choice([23, 25, 20, 0, 701]))
        for _ in range(max(0, min(ndim, 7))):
            out += struct.pack(
                "!ii",
                rnd.choice(_dims(ndim)),
                rnd.choice([1, 0, -5, 0x7FFFFFFF]),
            )
        for _ in range(rnd.randint(0, 8)):
            e = _random_element(rnd)
            out += struct.pack("!i", -1) if e is None else struct.pack("!i", len(e)) + e
        return out
    if k == 5:
        ndigits = rnd.randint(-2, 12)
        out = struct.pack(
            "!hhHh",
            ndigits,
            rnd.randint(-32768, 32767),
            rnd.choice([0, 0x4000, 0xC000, 0xD000, 0xF000, 0x1234]),
            rnd.randint(-5, 16383),
        )
        return out + b"".join(
            struct.pack("!H", rnd.randint(0, 20000)) for _ in range(rnd.randint(0, ndigits + 2))
        )
    if k == 6:
        out = bytes([rnd.randrange(256)])
        for _ in range(rnd.randint(0, 3)):
            e = _random_element(rnd)
            out += struct.pack("!i", -1) if e is None else struct.pack("!i", len(e)) + e
        return out
    return b"\x01" + rnd.randbytes(rnd.randint(1, 20))


def fuzz_random(
    seconds,
    seed,
    huge_lengths=False,
    hang_seconds=10.0,
    out=sys.stdout,
    example_file=None,
    progress=None,
):
    """The same properties over examples from a seeded PRNG; a finding prints the example
    (column OIDs, rows in hex, mutation seed, chunking) to replay it. Each example is first
    written to ``example_file``, which names the culprit when the process dies or hangs."""
    harness = Harness(huge_lengths, hang_seconds, example_file)
    rnd = random.Random(seed)
    findings = {}
    stop = time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            if progress:
                progress(harness, findings)
            for _ in range(100):
                oids = [rnd.choice(harness.oids) for _ in range(rnd.randint(1, 6))]
                rows = []
                for _ in range(rnd.randint(0, 4)):
                    count = None
                    if rnd.randrange(10) == 0:
                        count = rnd.choice([0, len(oids) - 1, len(oids) + 1, -1, 0x7FFF])
                    rows.append(data_row([_random_value(rnd) for _ in oids], count))
                mutation = _ByteMutation(rnd.random()) if rnd.randrange(4) == 0 else None
                chunking = [rnd.randint(1, 64) for _ in range(rnd.randint(0, 6))]
                try:
                    harness.run(oids, rows, mutation, chunking)
                except Finding as e:
                    key = _finding_key(e)
                    if key not in findings:
                        findings[key] = (
                            f"oids={oids} rows={[r.hex() for r in rows]} "
                            f"mutation={mutation!r} chunking={chunking}"
                        )
                        print(f"FINDING: {e}\n  example: {findings[key]}", file=out, flush=True)
    finally:
        harness.close()
    return harness, findings


def _finding_key(exc):
    """Findings that differ only in the numbers they quote are one finding."""
    return re.sub(r"-?\d+", "N", str(exc).splitlines()[0])[:120]


def _shrunk_example(exc):
    notes = getattr(exc, "__notes__", None) or []
    return " ".join(n for n in notes if "Falsifying" in n or "example" in n)[:4000]


def run_engines(args, seed, progress=None):
    """The engines ``args`` asks for, for ``args.seconds``; (executions, skipped, outcomes,
    findings)."""
    kw = {"huge_lengths": args.huge_lengths, "hang_seconds": args.hang_seconds}
    runs = []
    if args.engine in ("hypothesis", "both"):
        share = args.seconds / 2 if args.engine == "both" else args.seconds
        runs.append(fuzz(share, progress=progress, example_file=args.example_file, **kw))
    if args.engine in ("random", "both"):
        share = args.seconds / 2 if args.engine == "both" else args.seconds
        runs.append(
            fuzz_random(share, seed, example_file=args.example_file, progress=progress, **kw)
        )
    executions = sum(h.executions for h, _ in runs)
    skipped = sum(h.skipped_huge for h, _ in runs)
    outcomes, findings = {}, {}
    for h, found in runs:
        findings.update(found)
        for k, v in h.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    return executions, skipped, outcomes, findings


def child(args, seed):
    """One fuzzing process: JSON lines of progress, then of its totals."""
    done = {"executions": 0}

    def progress(harness, findings):
        print(json.dumps({"progress": done["executions"] + harness.executions}), flush=True)

    executions, skipped, outcomes, findings = run_engines(args, seed, progress)
    print(
        json.dumps(
            {
                "executions": executions,
                "skipped_huge": skipped,
                "outcomes": outcomes,
                "findings": findings,
            }
        ),
        flush=True,
    )


def supervise(args, seed):
    """Run child processes until the time is up; a child that dies (a hang caught by the
    watchdog, an abort) is a finding, named by the example it was running, and the next
    child goes on with another seed."""
    stop = time.monotonic() + args.seconds
    totals = {"executions": 0, "skipped_huge": 0, "outcomes": {}, "findings": {}, "deaths": 0}
    while (left := stop - time.monotonic()) > 1:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seconds", f"{left:.1f}"]
        cmd += ["--seed", str(seed), "--engine", args.engine, "--hang-seconds"]
        cmd += [str(args.hang_seconds), "--example-file", args.example_file]
        cmd += ["--huge-lengths"] * args.huge_lengths + ["--zero-dims"] * args.zero_dims
        if os.path.exists(args.example_file):
            os.unlink(args.example_file)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left + 300)
        last_progress, summary = 0, None
        lines = proc.stdout.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("FINDING: "):
                # kept from here too: a child that dies later never sends its totals
                print(line, flush=True)
                example = lines[i + 1] if i + 1 < len(lines) else ""
                key = re.sub(r"-?\d+", "N", line[len("FINDING: ") :])[:120]
                totals["findings"].setdefault(key, example.replace("  example: ", "", 1))
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "progress" in record:
                last_progress = record["progress"]
            else:
                summary = record
        if summary is None:
            totals["deaths"] += 1
            totals["executions"] += last_progress
            example = ""
            if os.path.exists(args.example_file):
                with open(args.example_file) as f:
                    example = f.read().strip()
            tail = (proc.stderr.strip().splitlines() or ["?"])[0]
            key = f"process died (status {proc.returncode}: {tail})"
            totals["findings"].setdefault(key, example)
            print(f"FINDING: {key}\n  example: {example}", flush=True)
        else:
            totals["executions"] += summary["executions"]
            totals["skipped_huge"] += summary["skipped_huge"]
            for key, example in summary["findings"].items():
                totals["findings"].setdefault(key, example)
            for k, v in summary["outcomes"].items():
                totals["outcomes"][k] = totals["outcomes"].get(k, 0) + v
        seed += 1
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--huge-lengths", action="store_true", help="do not skip huge lengths")
    ap.add_argument("--hang-seconds", type=float, default=10.0)
    ap.add_argument(
        "--engine",
        choices=["hypothesis", "random", "both"],
        default="both",
        help="hypothesis (shrinks what it finds) and/or a seeded PRNG (far more executions)",
    )
    ap.add_argument("--seed", type=int, help="the PRNG engine's seed (default: random)")
    ap.add_argument(
        "--example-file",
        default=os.path.join(tempfile.gettempdir(), "fuzz_protocol_example.txt"),
        help="where the PRNG engine writes each example before running it",
    )
    ap.add_argument(
        "--zero-dims", action="store_true", help="also arrays with zero-length dimensions"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ZERO_DIMS["on"] = args.zero_dims
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    if args.child:
        child(args, seed)
        return 0
    started = time.monotonic()
    totals = supervise(args, seed)
    took = time.monotonic() - started
    print(
        f"executions={totals['executions']} seconds={took:.0f} "
        f"rate={totals['executions'] / took:.0f}/s findings={len(totals['findings'])} "
        f"deaths={totals['deaths']} skipped_huge_lengths={totals['skipped_huge']} "
        f"first_seed={seed} asyncpg_rs={asyncpg_rs.__file__}"
    )
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(totals["outcomes"].items())))
    for key, example in totals["findings"].items():
        print(f"finding: {key}\n  example: {example[:1500]}")
    return 1 if totals["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
