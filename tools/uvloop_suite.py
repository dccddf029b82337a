"""Run uvloop's own test suite (of the installed release) on our loop, with uvloop's expectations.

uvloop's tests come in pairs: a ``Test_UV_*`` class (deriving ``uvloop._testbase.UVTestCase``,
whose ``new_loop()`` is ``uvloop.new_event_loop()`` and whose tests take uvloop's side wherever
uvloop and asyncio differ) and a ``Test_AIO_*`` one on the stdlib loop. This runs the UV classes,
and the plain test cases that use uvloop's public API (``uvloop.run``, ``uvloop.Loop``, the
policy), with uvloop's public names (``new_event_loop``, ``Loop``, ``EventLoopPolicy``, ``run``,
``install``) replaced by asyncpg_rs's, in the test process and in every Python process it starts
(the signal and dealloc tests run their loop in a child): a ``sitecustomize`` on ``PYTHONPATH``
rebinds them when ``uvloop`` is imported. ``--uvloop`` runs the same selection on real uvloop
for reference; ``--stdlib`` runs the AIO classes on the stdlib loop. Tests that read uvloop's
privates (its libuv internals, ``loop._get_backend_id()``, the ``uvloop.sslproto`` extra, the
``os`` functions uvloop binds at import, ...) fail on any other loop and are listed below as
not applicable. Where uvloop's choice differs from asyncio's and ours follows asyncio on
purpose, the test still runs and is reported, under DIFFERS_BY_DESIGN with its reason, apart
from the real failures (and not failing the run).

    python tools/uvloop_suite.py                     # our loop
    python tools/uvloop_suite.py --uvloop            # the reference
    python tools/uvloop_suite.py test_tcp -k TCPSSL  # a selection

uvloop's wheel has no tests: the first run fetches the sdist of the installed version with
``pip download`` into ``~/.cache/asyncpg_rs/`` (``--cache DIR``; never into the repository) and
keeps its ``tests/``. Each module runs in a child process, with unittest; a test that hangs
past ``--test-timeout`` (60 s) is reported as such and the module resumes after it, and a
module gets ``--module-timeout`` (600 s) in all, so a run is bounded by 16 modules x 600 s and
takes 1.5 to 3.5 minutes on a quiet machine (logs, with a hung test's traceback, are kept in a
temporary directory the run names). uvloop's tests import ``psutil``, ``pyOpenSSL`` and
``aiohttp`` (``pip install psutil pyOpenSSL aiohttp``; a module that cannot import is reported
as an error). A conformance check, not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
from pathlib import Path

MODULES = (
    "test_base",
    "test_context",
    "test_dns",
    "test_executors",
    "test_pipes",
    "test_process",
    "test_process_spawning",
    "test_regr1",
    "test_runner",
    "test_signals",
    "test_sockets",
    "test_tcp",
    "test_udp",
    "test_unix",
    "test_dealloc",
    "test_aiohttp",
)

# whole modules that test uvloop itself rather than an event loop
NOT_APPLICABLE_MODULES = {
    "test_cython": "uvloop.loop's Cython coroutine helpers",
    "test_libuv_api": "uvloop.loop's libuv C API (uv_loop_t pointer, capsules)",
    "test_fs_event": "uvloop.loop.FileSystemEvent and loop._monitor_fs, uvloop only",
    "test_sourcecode": "flake8 and mypy over uvloop's source tree",
    "test_testbase": "uvloop's _testbase metaclass, no loop involved",
}

# each reads a private of uvloop's loop or transports, or passes a uvloop-only hook
NOT_APPLICABLE = {
    "test_base.TestBaseUV.test_close": "asserts loop._closed, a private attribute",
    "test_sockets.TestUVSockets.test_socket_sync_remove": (
        "opens the loop's epoll fd through loop._get_backend_id(), uvloop only"
    ),
    "test_tcp.Test_UV_TCP.test_transport_get_extra_info": (
        "asserts the transport's private _paused and _closing attributes"
    ),
    "test_tcp.Test_UV_TCPSSL.test_flush_before_shutdown": (
        "drives uvloop's SSLProtocol through get_extra_info('uvloop.sslproto')"
    ),
    "test_tcp.Test_UV_TCPSSL.test_remote_shutdown_receives_trailing_data": (
        "fills the write backlog with transport._test__append_write_backlog()"
    ),
    "test_runner.TestSourceCode.test_uvloop_run_2": (
        "asserts uvloop's message for a foreign loop_factory loop; ours raises the same"
        " TypeError naming asyncpg_rs"
    ),
    "test_process.Test_UV_Process.test_process_double_close": (
        "mocks os.pipe/dup/close only while uvloop is imported: counts what uvloop bound then"
    ),
    "test_process.Test_UV_Process_Delayed.test_process_delayed_stdio__paused__stdin_pipe": (
        "passes uvloop's private __uvloop_sleep_after_fork to subprocess_shell"
    ),
    "test_process.Test_UV_Process_Delayed.test_process_delayed_stdio__paused__no_stdin": (
        "passes uvloop's private __uvloop_sleep_after_fork to subprocess_shell"
    ),
}

# uvloop's own choices where ours deliberately does as asyncio does: still run and reported,
# but apart from the real failures
DIFFERS_BY_DESIGN = {
    "test_udp.Test_UV_UDP.test_create_datagram_endpoint_reuse_address_error": (
        "reuse_address= was removed from asyncio's create_datagram_endpoint (3.11); uvloop keeps it"
    ),
    "test_udp.Test_UV_UDP.test_create_datagram_endpoint_reuse_address_warning": (
        "reuse_address= was removed from asyncio's create_datagram_endpoint (3.11); uvloop keeps it"
    ),
    "test_signals.Test_UV_Signals.test_signals_no_SIGCHLD": (
        "asyncio allows a SIGCHLD handler; uvloop refuses it (it watches children with it)"
    ),
    "test_sockets.TestUVSockets.test_pseudosocket": (
        "server.sockets are asyncio's TransportSocket, as on the stdlib loop; uvloop's PseudoSocket"
    ),
    "test_tcp.Test_UV_TCP.test_create_server_buffered_2": (
        "a get_buffer() error reaches the handler as raised, as asyncio does; uvloop wraps it"
    ),
    "test_base.TestBaseUV.test_thread_name_prefix_in_default_executor": (
        "default executor threads are named as asyncio names them; uvloop's are 'uvloop...'"
    ),
    "test_unix.Test_UV_Unix.test_epollhup": (
        "one read per readiness event, for fairness between connections: EOF comes a turn later"
    ),
    "test_tcp.Test_UV_TCPSSL.test_shutdown_timeout_handler_not_set": (
        "a raw TCP EOF while reading is paused keeps the plaintext for resume_reading, as asyncio"
        " (CPython's test of the same name asserts it arrives); uvloop drops it. This protocol"
        " resumes only on eof_received, so it ends at ssl_shutdown_timeout (TimeoutError)"
    ),
}

# rebinds uvloop's public names to asyncpg_rs's as uvloop is imported, in any process that
# has this as its sitecustomize
SITECUSTOMIZE = """\
import importlib.abc
import importlib.util
import sys


class _UvloopIsAsyncpgRs(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "uvloop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_rebind(module):
            exec_module(module)
            import asyncpg_rs

            for attr in ("new_event_loop", "Loop", "EventLoopPolicy", "run", "install"):
                setattr(module, attr, getattr(asyncpg_rs, attr))

        spec.loader.exec_module = exec_then_rebind
        return spec


sys.meta_path.insert(0, _UvloopIsAsyncpgRs())
"""


def fetch_tests(cache: Path) -> Path:
    """uvloop's tests/ for the installed version, from its sdist (downloaded once)."""
    from importlib.metadata import version

    ver = version("uvloop")
    tests = cache / f"uvloop-{ver}" / "tests"
    if (tests / "__init__.py").exists():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        print(f"fetching uvloop {ver}'s sdist for its tests ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--no-binary", ":all:", f"uvloop=={ver}", "-d", tmp]
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob("uvloop-*.tar.gz")
        with tarfile.open(sdist) as tar:
            prefix = f"uvloop-{ver}/tests/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **safe)
        shutil.rmtree(cache / f"uvloop-{ver}", ignore_errors=True)  # a partial earlier copy
        os.replace(Path(tmp) / f"uvloop-{ver}", cache / f"uvloop-{ver}")
    return tests


# ---------------------------------------------------------------- the child: one module


class _Recorder(unittest.TestResult):
    """Writes a JSON line as each test starts and ends; arms the hang watchdog."""

    def __init__(self, out, test_timeout):
        super().__init__()
        self.out = out
        self.test_timeout = test_timeout
        self.outcome = self.detail = None

    def _emit(self, **rec):
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()

    def _set(self, outcome, detail=""):
        if self.outcome in (None, "passed", "skipped"):  # the first failure is the one told
            self.outcome, self.detail = outcome, detail

    def startTest(self, test):
        super().startTest(test)
        import faulthandler

        self.outcome = self.detail = None
        self._emit(event="start", id=test.id())
        faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def stopTest(self, test):
        import faulthandler

        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        self._emit(event="end", id=test.id(), outcome=self.outcome or "passed", detail=self.detail)

    def addSuccess(self, test):
        self._set("passed")

    def addSkip(self, test, reason):
        self._set("skipped", reason)

    def addExpectedFailure(self, test, err):
        self._set("passed", "expected failure")

    def addUnexpectedSuccess(self, test):
        self._set("failed", "unexpected success")

    def addFailure(self, test, err):
        self._set("failed", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        self._set("error", self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        if err is not None:
            kind = "failed" if issubclass(err[0], test.failureException) else "error"
            self._set(kind, f"{subtest.id()}\n{self._exc_info_to_string(err, test)}")


def _selection(module, mode, pattern, skip):
    from uvloop import _testbase as tb

    loader = unittest.defaultTestLoader
    tests = []
    for obj in vars(module).values():
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)):
            continue
        if obj.__module__ != module.__name__:
            continue
        if mode == "stdlib":
            wanted = issubclass(obj, tb.AIOTestCase)
        else:  # the UV classes, and plain cases using uvloop's public API
            wanted = issubclass(obj, tb.UVTestCase) or not issubclass(obj, tb.BaseTestCase)
        if wanted:
            tests.extend(_flatten(loader.loadTestsFromTestCase(obj)))
    return [
        t
        for t in tests
        if t.id() not in NOT_APPLICABLE
        and t.id() not in skip
        and (not pattern or re.search(pattern, t.id()))
    ]


def _flatten(tests):
    for t in tests:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def child(args):
    # a runner started in the background by a shell inherits SIGINT ignored, and so would the
    # Python children that the signal tests interrupt with it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, str(args.tests_dir))
    skip = set(json.loads(Path(args.skip).read_text())) if args.skip else set()
    with open(args.results, "a") as out:
        try:
            module = importlib.import_module(args.child)
        except Exception as e:  # a module whose imports are missing (aiohttp, ...)
            rec = dict(event="end", id=f"{args.child}.<import>", outcome="error", detail=repr(e))
            out.write(json.dumps(rec) + "\n")
            return
        if args.mode == "ours":
            import uvloop

            import asyncpg_rs

            assert uvloop.new_event_loop is asyncpg_rs.new_event_loop, "sitecustomize missed"
        tests = _selection(module, args.mode, args.pattern, skip)
        unittest.TestSuite(tests).run(_Recorder(out, args.test_timeout))


# ---------------------------------------------------------------- the parent


def run_module(name, args, tests_dir, shim, logdir):
    """Run one module in children until every selected test has ended; records by test id."""
    results = logdir / f"{name}.jsonl"
    results.unlink(missing_ok=True)
    log = logdir / f"{name}.log"
    env = dict(os.environ)
    if shim:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    records, deadline = {}, time.monotonic() + args.module_timeout
    with open(log, "w") as logf:
        while True:
            skipfile = logdir / f"{name}.skip.json"
            skipfile.write_text(json.dumps(sorted(records)))
            cmd = [sys.executable, __file__, "--child", name, "--tests-dir", str(tests_dir)]
            cmd += ["--mode", args.mode, "--results", str(results), "--skip", str(skipfile)]
            cmd += ["--test-timeout", str(args.test_timeout)]
            if args.pattern:
                cmd += ["-k", args.pattern]
            proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True,
            )  # fmt: skip
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
            started = None
            for line in results.read_text().splitlines():
                rec = json.loads(line)
                if rec["event"] == "start":
                    started = rec["id"]
                else:
                    records[rec["id"]] = rec
                    started = None if started == rec["id"] else started
            if started is None:
                if rc not in (0, None):
                    records[f"{name}.<child>"] = dict(
                        id=f"{name}.<child>", outcome="error", detail=f"exit code {rc}"
                    )
                break
            if rc is None:
                why = f"module timeout ({args.module_timeout} s) in this test"
            else:
                why = f"hung past {args.test_timeout} s" if rc == 1 else f"died (exit code {rc})"
            records[started] = dict(id=started, outcome="error", detail=f"{why}; see {log}")
            if rc is None:
                break
    return records


def summarize(by_module, verbose):
    """Counts per module and test class, then the failing tests; True when none failed."""
    cols = ("run", "passed", "failed", "errors", "skipped")
    rows = {}
    for name, records in by_module.items():
        for rec in records.values():
            test_id = rec["id"]
            row = test_id.rsplit(".", 1)[0] if test_id.count(".") >= 2 else name
            rows.setdefault(row, []).append(rec)
    width = max([24, *map(len, rows)]) + 2
    print(f"\n{'module.class':{width}}" + "".join(f"{c:>8}" for c in cols))
    totals = dict.fromkeys(cols, 0)
    bad, by_design = [], []
    for row, records in rows.items():
        n = dict.fromkeys(cols, 0)
        for rec in records:
            key = {"passed": "passed", "failed": "failed", "skipped": "skipped"}
            key = key.get(rec["outcome"], "errors")
            n["run"] += 1
            n[key] += 1
            if key in ("failed", "errors"):
                (by_design if rec["id"] in DIFFERS_BY_DESIGN else bad).append(rec)
        for c in cols:
            totals[c] += n[c]
        print(f"{row:{width}}" + "".join(f"{n[c]:>8}" for c in cols))
    print(f"{'total':{width}}" + "".join(f"{totals[c]:>8}" for c in cols))
    if bad:
        print(f"\nfailing ({len(bad)}):")
    for rec in bad:
        lines = (rec.get("detail") or "").strip().splitlines()
        print(f"  {rec['outcome']:6} {rec['id']}: {lines[-1] if lines else ''}")
        if verbose and len(lines) > 1:
            print("\n".join("         " + line for line in lines))
    if by_design:
        print(
            f"\ndiffering by design ({len(by_design)}; DIFFERS_BY_DESIGN in {Path(__file__).name}):"
        )
    for rec in by_design:
        print(f"  {rec['outcome']:6} {rec['id']}: {DIFFERS_BY_DESIGN[rec['id']]}")
    print(
        f"\nnot applicable: {len(NOT_APPLICABLE)} tests and {len(NOT_APPLICABLE_MODULES)} modules"
        f" (NOT_APPLICABLE in {Path(__file__).name})"
    )
    return not bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"modules to run (default: {', '.join(MODULES)})")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--uvloop", action="store_const", dest="mode", const="uvloop",
                      help="run the same selection on real uvloop")  # fmt: skip
    mode.add_argument("--stdlib", action="store_const", dest="mode", const="stdlib",
                      help="run the AIO classes on the stdlib loop")  # fmt: skip
    ap.add_argument("-k", dest="pattern", help="only test ids matching this regular expression")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "asyncpg_rs")
    ap.add_argument("--test-timeout", type=int, default=60)
    ap.add_argument("--module-timeout", type=int, default=600)
    ap.add_argument("-v", "--verbose", action="store_true", help="print failures' tracebacks")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", dest="child_mode", help=argparse.SUPPRESS)
    ap.add_argument("--tests-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--skip", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.mode = args.child_mode
        return child(args)
    args.mode = args.mode or "ours"
    tests_dir = fetch_tests(args.cache)
    modules = args.modules or MODULES
    by_module = {}
    with tempfile.TemporaryDirectory(prefix="uvloop-suite-") as tmp:
        shim = None
        if args.mode == "ours":
            shim = Path(tmp) / "shim"
            shim.mkdir()
            (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        logdir = Path(tempfile.mkdtemp(prefix=f"uvloop-suite-{args.mode}-logs-"))
        print(f"uvloop's tests from {tests_dir}, on {args.mode}; logs in {logdir}")
        for name in modules:
            t0 = time.monotonic()
            by_module[name] = run_module(name, args, tests_dir, shim, logdir)
            print(f"  {name}: {len(by_module[name])} tests, {time.monotonic() - t0:.0f} s")
    sys.exit(0 if summarize(by_module, args.verbose) else 1)


if __name__ == "__main__":
    main()
