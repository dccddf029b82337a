"""Test harness: a throwaway PostgreSQL cluster and async tests run under every event loop.

- ``pg`` (session): the cluster (see ``tools/pgcluster.py`` for its roles and TLS), or the
  server named by ``ASYNCPG_RS_TEST_DSN`` (tests that need the harness's roles or TLS skip
  there).
- Every ``async def test_*`` runs in a fresh event loop, once per loop: ``asyncio`` (the
  stdlib), ``uvloop``, and ``asyncpg_rs`` (our own) when the package provides it. Restrict
  with ``@pytest.mark.loops("asyncio", ...)``.
- Async fixtures (``@async_fixture``) run inside the test's loop: ``con`` is a superuser
  connection, closed after the test even when it fails.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pgcluster  # noqa: E402


def _loop_factories(networking=True):
    """The loops async tests run on; ``networking=False`` also takes a loop without transports."""
    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        import asyncpg_rs

        serves_sockets = hasattr(asyncpg_rs, "Loop") and (
            asyncpg_rs.Loop.create_connection is not asyncio.AbstractEventLoop.create_connection
        )
        if hasattr(asyncpg_rs, "new_event_loop") and (serves_sockets or not networking):
            factories["asyncpg_rs"] = asyncpg_rs.new_event_loop
    except ImportError:
        pass
    return factories


LOOPS = _loop_factories()
# Loop tests (``pytest.mark.any_loop``) also run on our loop before it has transports.
ALL_LOOPS = _loop_factories(networking=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "loops(*names): run this async test only on these loops")
    config.addinivalue_line("markers", "needs_roles: needs the throwaway cluster's roles/TLS")
    config.addinivalue_line(
        "markers", "any_loop: a loop test, run on every loop (transports or not)"
    )


# ---------------------------------------------------------------- the server


class ExternalServer:
    """A server named by ASYNCPG_RS_TEST_DSN: no special roles, no TLS guarantees."""

    external = True

    def __init__(self, dsn):
        u = urllib.parse.urlparse(dsn)
        self._dsn = dsn
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 5432
        self.user = urllib.parse.unquote(u.username or "postgres")
        self.password = urllib.parse.unquote(u.password) if u.password else None
        self.database = (u.path or "/postgres").lstrip("/") or "postgres"
        self.sockdir = None
        self.ssl_cert = None
        self.roles = {}

    def dsn(self, **params):
        return self._dsn

    def connect_kwargs(self, **overrides):
        kw = {"host": self.host, "port": self.port, "user": self.user, "database": self.database}
        if self.password:
            kw["password"] = self.password
        kw.update(overrides)
        return kw

    def stop(self):
        pass


@pytest.fixture(scope="session")
def pg():
    dsn = os.environ.get("ASYNCPG_RS_TEST_DSN")
    if dsn:
        yield ExternalServer(dsn)
        return
    cluster = pgcluster.Cluster.start()
    cluster.external = False
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_roles(pg):
    """The cluster's per-auth-method roles; skips on an external server."""
    if getattr(pg, "external", False):
        pytest.skip("needs the throwaway cluster's roles (ASYNCPG_RS_TEST_DSN is set)")
    return pg.roles


# ---------------------------------------------------------------- async tests


class _AsyncFixtureValue:
    """A fixture value to be produced inside the test's event loop."""

    def __init__(self, func, kwargs):
        self.func = func
        self.kwargs = kwargs


def async_fixture(func):
    """Declare a fixture whose body is a coroutine or an async generator.

    It runs in the same event loop as the test that uses it.
    """

    @pytest.fixture
    @functools.wraps(func)
    def wrapper(**kwargs):
        return _AsyncFixtureValue(func, kwargs)

    return wrapper


@async_fixture
async def con(pg):
    import asyncpg_rs

    connection = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        yield connection
    finally:
        if not connection.is_closed():
            await connection.close()


def pytest_generate_tests(metafunc):
    if not inspect.iscoroutinefunction(metafunc.function):
        return
    any_loop = metafunc.definition.get_closest_marker("any_loop") is not None
    names = list(ALL_LOOPS if any_loop else LOOPS)
    marker = metafunc.definition.get_closest_marker("loops")
    if marker is not None:
        names = [n for n in names if n in marker.args]
    if "event_loop_name" not in metafunc.fixturenames:
        metafunc.fixturenames.append("event_loop_name")
    metafunc.parametrize("event_loop_name", names, ids=names, indirect=True)


@pytest.fixture
def event_loop_name(request):
    """The name of the event loop an async test runs on."""
    return request.param


async def _resolve(value, finalizers):
    if isinstance(value, _AsyncFixtureValue):
        kwargs = {k: await _resolve(v, finalizers) for k, v in value.kwargs.items()}
        if inspect.isasyncgenfunction(value.func):
            agen = value.func(**kwargs)
            result = await agen.__anext__()
            finalizers.append(agen)
            return result
        return await value.func(**kwargs)
    return value


async def _run_test(func, kwargs):
    finalizers = []
    try:
        resolved = {k: await _resolve(v, finalizers) for k, v in kwargs.items()}
        await func(**resolved)
    finally:
        for agen in reversed(finalizers):
            try:
                await agen.__anext__()
            except StopAsyncIteration:
                pass


def _cancel_leftovers(loop):
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    loop_name = pyfuncitem.callspec.params["event_loop_name"]
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    loop = ALL_LOOPS[loop_name]()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_run_test(func, kwargs))
    finally:
        try:
            _cancel_leftovers(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return True
