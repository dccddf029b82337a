"""Run CPython's own asyncio tests (the interpreter's ``test.test_asyncio`` package) on our loop.

The loop-generic parts of that suite (event loop methods, low-level sockets, sendfile,
servers, buffered protocols, subprocesses, TLS, streams, start_tls, and the modules that run
through ``asyncio.run``) are run with asyncpg_rs's loop in place of the stdlib's, or with the
stdlib's for reference. Tests that patch the stdlib loop's private methods or the modules it
imports (``_run_once``, ``_sock_sendfile_native``, a mocked ``socket`` module, ...) fail on any
other loop and are listed below as not applicable.

    python tools/cpython_asyncio_suite.py            # our loop
    python tools/cpython_asyncio_suite.py --stdlib   # the reference

Needs an interpreter that ships its test package (pyenv and python.org builds do; Debian's
needs ``libpython3.X-testsuite``). A conformance check, not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import sys
import unittest

import asyncpg_rs

# each patches a private of the stdlib loop or of a module it imports, or asserts a
# transport's repr after loop.close() (ours marks its transports closed there)
NOT_APPLICABLE = {
    "test_prompt_cancellation",  # patches loop._run_once
    "test_timeout_rounding",  # patches loop._run_once
    "test_create_server_multiple_hosts_ipv4",  # mocks the socket module, _stop_serving
    "test_create_server_multiple_hosts_ipv6",
    "test_unclosed_pipe_transport",  # repr of a transport after loop.close()
    "test_sendfile_force_unsupported_native",  # patches loop._sendfile_native
    # drive asyncio's TLS internals: the transport's _ssl_protocol, _test__append_write_backlog
    "test_flush_before_shutdown",
    "test_remote_shutdown_receives_trailing_data",
}

POLICY_MODULES = (
    "test_taskgroups",
    "test_timeouts",
    "test_waitfor",
    "test_locks",
    "test_queues",
    "test_pep492",
    "test_context",
    "test_runners",
    "test_threads",
)


def suite(factory):
    from test.test_asyncio import test_buffered_proto as buffered
    from test.test_asyncio import test_events as events
    from test.test_asyncio import test_sendfile as sendfile
    from test.test_asyncio import test_server as server
    from test.test_asyncio import test_sock_lowlevel as sock
    from test.test_asyncio import test_ssl as tls
    from test.test_asyncio import test_sslproto as sslproto
    from test.test_asyncio import test_streams as streams
    from test.test_asyncio import test_subprocess as subprocess
    from test.test_asyncio import utils as test_utils

    class Events(events.EventLoopTestsMixin, events.SubprocessTestsMixin, test_utils.TestCase):
        def create_event_loop(self):
            return factory()

    class Sock(sock.BaseSockTestsMixin, test_utils.TestCase):
        def create_event_loop(self):
            return factory()

    class Sendfile(sendfile.SendfileTestsBase, test_utils.TestCase):
        def create_event_loop(self):
            return factory()

    class Server(server.BaseStartServer, unittest.TestCase):
        def new_loop(self):
            return factory()

    class Buffered(buffered.BaseTestBufferedProtocol, unittest.TestCase):
        def new_loop(self):
            return factory()

    class Subprocess(subprocess.SubprocessMixin, test_utils.TestCase):
        def setUp(self):
            super().setUp()
            self.loop = factory()
            self.set_event_loop(self.loop)

    class StartTLS(sslproto.BaseStartTLS, unittest.TestCase):
        def new_loop(self):
            return factory()

    loader = unittest.defaultTestLoader
    tests = unittest.TestSuite()
    for case in (Events, Sock, Sendfile, Server, Buffered, Subprocess, StartTLS):
        tests.addTests(loader.loadTestsFromTestCase(case))
    # these make their loops with asyncio.new_event_loop() or run through asyncio.run()
    tests.addTests(loader.loadTestsFromTestCase(tls.TestSSL))
    tests.addTests(loader.loadTestsFromTestCase(streams.StreamTests))
    for name in POLICY_MODULES:
        tests.addTests(
            loader.loadTestsFromModule(importlib.import_module(f"test.test_asyncio.{name}"))
        )
    return unittest.TestSuite(t for t in _flatten(tests) if t._testMethodName not in NOT_APPLICABLE)


def _flatten(tests):
    for t in tests:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stdlib", action="store_true", help="run on the stdlib loop instead")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.stdlib:
        factory = asyncio.new_event_loop
    else:
        factory = asyncpg_rs.new_event_loop
        asyncio.set_event_loop_policy(asyncpg_rs.EventLoopPolicy())
        asyncio.new_event_loop = asyncpg_rs.new_event_loop
    faulthandler.dump_traceback_later(900, exit=True)  # a hang names its test
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite(factory))
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
