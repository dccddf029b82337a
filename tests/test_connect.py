"""Connecting: auth methods, sslmodes, DSNs, multiple hosts, .pgpass, target_session_attrs."""

import asyncio
import gc
import os
import ssl
import time
import weakref

import pytest

import asyncpg_rs
from asyncpg_rs import connect_utils, exceptions

# ---------------------------------------------------------------- against the server


@pytest.mark.parametrize("method", ["trust", "password", "md5", "scram"])
async def test_auth_methods(pg, pg_roles, method):
    user, password = pg_roles[method]
    con = await asyncpg_rs.connect(
        host=pg.host, port=pg.port, user=user, password=password, database="postgres", ssl="disable"
    )
    try:
        assert await con.fetchval("SELECT current_user") == user
    finally:
        await con.close()


@pytest.mark.parametrize("method", ["password", "md5", "scram"])
async def test_wrong_password(pg, pg_roles, method):
    user, _ = pg_roles[method]
    with pytest.raises(exceptions.InvalidPasswordError):
        await asyncpg_rs.connect(
            host=pg.host, port=pg.port, user=user, password="wrong", database="postgres"
        )


async def test_async_callable_password(pg, pg_roles):
    user, password = pg_roles["scram"]

    async def get_password():
        return password

    con = await asyncpg_rs.connect(
        host=pg.host, port=pg.port, user=user, password=get_password, database="postgres"
    )
    await con.close()


@pytest.mark.parametrize(
    "sslmode, expect_ssl",
    [
        ("disable", False),
        ("allow", False),
        ("prefer", True),
        ("require", True),
    ],
)
async def test_sslmodes(pg, pg_roles, sslmode, expect_ssl):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), ssl=sslmode)
    try:
        in_ssl = await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert in_ssl is expect_ssl
    finally:
        await con.close()


async def test_verify_full_with_the_server_ca(pg, pg_roles):
    ctx = ssl.create_default_context(cafile=pg.ssl_cert)
    con = await asyncpg_rs.connect(**pg.connect_kwargs(host="localhost"), ssl=ctx)
    try:
        assert (
            await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        )
    finally:
        await con.close()
    dsn = (
        f"postgresql://postgres@localhost:{pg.port}/postgres?sslmode=verify-full"
        f"&sslrootcert={pg.ssl_cert}"
    )
    con = await asyncpg_rs.connect(dsn)
    await con.close()


async def test_verification_failure(pg, pg_roles):
    # the system CAs do not know the throwaway server's self-signed certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg_rs.connect(**pg.connect_kwargs(), ssl=ssl.create_default_context())


async def test_prefer_falls_back_to_plaintext_for_hostnossl(pg, pg_roles):
    user, password = pg_roles["nossl"]
    con = await asyncpg_rs.connect(
        host=pg.host, port=pg.port, user=user, password=password, database="postgres", ssl="prefer"
    )
    try:
        assert (
            await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is False
        )
    finally:
        await con.close()
    with pytest.raises(exceptions.InvalidAuthorizationSpecificationError):
        await asyncpg_rs.connect(
            host=pg.host,
            port=pg.port,
            user=user,
            password=password,
            database="postgres",
            ssl="require",
        )


async def test_allow_upgrades_to_tls_for_hostssl(pg, pg_roles):
    user, password = pg_roles["ssl_only"]
    con = await asyncpg_rs.connect(
        host=pg.host, port=pg.port, user=user, password=password, database="postgres", ssl="allow"
    )
    try:
        assert (
            await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        )
    finally:
        await con.close()


@pytest.mark.parametrize("role, sslmode", [("ssl_only", "prefer"), ("nossl", "allow")])
async def test_wrong_password_is_retried_over_the_other_transport_and_reported(
    pg, pg_roles, role, sslmode
):
    # As libpq: a wrong password on the first transport is retried on the other one (its
    # pg_hba.conf line may authenticate differently); when the other one has no line at
    # all, the password error is what the caller sees, not "no pg_hba.conf entry".
    user, _ = pg_roles[role]
    with pytest.raises(exceptions.InvalidPasswordError, match="password authentication failed"):
        await asyncpg_rs.connect(
            host=pg.host,
            port=pg.port,
            user=user,
            password="wrong",
            database="postgres",
            ssl=sslmode,
        )


async def test_unix_socket(pg, pg_roles):
    con = await asyncpg_rs.connect(
        host=pg.sockdir, port=pg.port, user="postgres", database="postgres"
    )
    try:
        assert await con.fetchval("SELECT 1") == 1
    finally:
        await con.close()


async def test_multi_host_falls_through_dead_hosts(pg):
    dsn = f"postgresql://postgres@127.0.0.1:1,{pg.host}:{pg.port}/postgres"
    con = await asyncpg_rs.connect(dsn)
    try:
        assert await con.fetchval("SELECT 1") == 1
    finally:
        await con.close()


async def test_target_session_attrs(pg):
    kw = pg.connect_kwargs()
    for attrs in ("any", "primary", "read-write", "prefer-standby"):
        con = await asyncpg_rs.connect(**kw, target_session_attrs=attrs)
        await con.close()
    for attrs in ("standby", "read-only"):
        with pytest.raises(exceptions.TargetServerAttributeNotMatched):
            await asyncpg_rs.connect(**kw, target_session_attrs=attrs)


async def test_unreachable_host_fails_within_timeout():
    started = time.monotonic()
    # nothing listens on port 1: the refusal must surface as an error, not a hang
    with pytest.raises((asyncio.TimeoutError, OSError)):
        await asyncpg_rs.connect(host="127.0.0.1", port=1, user="x", timeout=2)
    assert time.monotonic() - started < 10


async def test_server_settings_and_connect_kwargs(pg):
    con = await asyncpg_rs.connect(
        **pg.connect_kwargs(), server_settings={"application_name": "rs-test"}
    )
    try:
        assert await con.fetchval("SHOW application_name") == "rs-test"
    finally:
        await con.close()
    with pytest.raises(exceptions.InterfaceError):
        await asyncpg_rs.connect(**pg.connect_kwargs(), connection_class=dict)


@pytest.mark.parametrize("sslmode", ["disable", "require"])
async def test_cancel_request_stops_a_running_query(pg, sslmode):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), ssl=sslmode)
    try:
        query = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(60)"))
        # wait until the backend is really inside pg_sleep before cancelling it
        other = await asyncpg_rs.connect(**pg.connect_kwargs(), ssl="disable")
        try:
            for _ in range(500):
                if await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 "
                    "AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                    con.get_server_pid(),
                ):
                    break
                await asyncio.sleep(0.01)
        finally:
            await other.close()
        await connect_utils._cancel(
            loop=asyncio.get_running_loop(),
            addr=con._addr,
            params=con._params,
            backend_pid=con._protocol.get_server_pid(),
            backend_secret=con._protocol.get_backend_secret(),
        )
        with pytest.raises(exceptions.QueryCanceledError):
            await query
        assert await con.fetchval("SELECT 2") == 2
    finally:
        await con.close()


async def test_pgpass_supplies_the_password(pg, pg_roles, tmp_path):
    user, password = pg_roles["scram"]
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(
        f"{pg.host}:{pg.port}:postgres:{user}:{password}\nlocalhost:{pg.port}:*:{user}:{password}\n"
    )
    os.chmod(pgpass, 0o600)
    for host in (pg.host, pg.sockdir):
        con = await asyncpg_rs.connect(
            host=host, port=pg.port, user=user, database="postgres", passfile=str(pgpass)
        )
        try:
            assert await con.fetchval("SELECT current_user") == user
        finally:
            await con.close()


async def test_timeout_covers_a_server_that_never_answers():
    # a listener that accepts and then stays silent: only `timeout` can end the attempt
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncpg_rs.connect(
                host="127.0.0.1", port=port, user="x", ssl="disable", timeout=0.5
            )
        with pytest.raises(asyncio.TimeoutError):
            await asyncpg_rs.connect(
                host="127.0.0.1", port=port, user="x", ssl="prefer", timeout=0.5
            )
    finally:
        server.close()


async def test_every_failed_host_is_named(pg, pg_roles):
    user, _ = pg_roles["scram"]
    with pytest.raises(exceptions.TargetServerAttributeNotMatched) as ei:
        await asyncpg_rs.connect(
            host=["127.0.0.1", pg.host],
            port=[1, pg.port],
            user="postgres",
            database="postgres",
            target_session_attrs="standby",
        )
    notes = "\n".join(getattr(ei.value, "__notes__", []))
    assert "127.0.0.1:1" in notes and f"{pg.host}:{pg.port}" in notes


class _AnswerSSLRequest(asyncio.Protocol):
    """A fake server that answers the 8-byte SSLRequest with one fixed byte."""

    answer = b"N"

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data[:8] == b"\x00\x00\x00\x08\x04\xd2\x16\x2f":
            self.transport.write(self.answer)


@pytest.mark.parametrize("answer", [b"N", b"E"])
async def test_require_fails_when_the_server_refuses_tls(answer):
    loop = asyncio.get_running_loop()
    proto_cls = type("P", (_AnswerSSLRequest,), {"answer": answer})
    server = await loop.create_server(proto_cls, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionError) as ei:
            await asyncpg_rs.connect(
                host="127.0.0.1", port=port, user="x", ssl="require", timeout=5
            )
        assert f"127.0.0.1:{port}" in str(ei.value)
    finally:
        server.close()


@pytest.mark.parametrize("debug", [False, True])
async def test_unclosed_connection_is_freed_and_warns(pg, debug):
    # dropped without close(): freed by its refcount alone (no cycle keeps it for the GC),
    # aborted, with asyncpg's ResourceWarning; in debug mode it names where it was made
    loop = asyncio.get_running_loop()
    old_debug = loop.get_debug()
    loop.set_debug(debug)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        con = await asyncpg_rs.connect(**pg.connect_kwargs())
        assert await con.fetchval("SELECT 123") == 123
        pid = con.get_server_pid()
        ref = weakref.ref(con)
        with pytest.warns(ResourceWarning, match="unclosed connection") as record:
            del con
        assert ref() is None
    finally:
        loop.set_debug(old_debug)
        if gc_was_enabled:
            gc.enable()
    message = str(record[0].message)
    if debug:
        assert (
            "created at:\n" in message and "test_unclosed_connection_is_freed_and_warns" in message
        )
    else:
        assert "run in asyncio debug mode" in message
    # the server sees the session end
    other = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        for _ in range(100):
            if not await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the dropped connection's backend is still there")
    finally:
        await other.close()
