"""libpq ``key=value`` connection strings and ``load_balance_hosts``."""

from __future__ import annotations

import asyncio
import collections

import pytest
from test_connect_params import _parse as _parse_arguments

import asyncpg_rs
from asyncpg_rs import _conninfo, connect_utils, exceptions


def _parse(dsn, **kw):
    return _parse_arguments(dsn=dsn, **kw)


@pytest.mark.parametrize(
    "dsn,expected",
    [
        ("host=a port=5432", {"host": "a", "port": "5432"}),
        ("host = a   port=\t5432 ", {"host": "a", "port": "5432"}),
        (r"password='it\'s a \\ secret'", {"password": "it's a \\ secret"}),
        (r"application_name=a\ b", {"application_name": "a b"}),
        ("dbname='' user=u", {"dbname": "", "user": "u"}),
        ("user=a user=b", {"user": "b"}),
        ("host= port=1", {"host": "port=1"}),  # libpq reads the next word as the value
    ],
)
def test_parse_conninfo(dsn, expected):
    assert _conninfo.parse_conninfo(dsn) == expected


@pytest.mark.parametrize(
    "dsn,message",
    [
        ("host=a bogus=1", 'invalid connection option "bogus"'),
        ("host=a port", 'missing "=" after "port"'),
        ("password='never closed", 'unterminated quoted string in the value of "password"'),
        ("hostaddr=127.0.0.1", '"hostaddr" is not supported'),
        # libpq has no '' escape: the quote ends the value and starts a keyword
        ("password='it''s'", 'missing "=" after "\'s\'"'),
    ],
)
def test_conninfo_errors_name_the_culprit(dsn, message):
    with pytest.raises(exceptions.ClientConfigurationError) as info:
        _parse(dsn)
    assert message in str(info.value)


def test_conninfo_error_does_not_show_the_password():
    with pytest.raises(exceptions.ClientConfigurationError) as info:
        _parse("password='s3cr3t-value bogus=1")
    assert "s3cr3t" not in str(info.value)


def test_conninfo_means_what_the_same_uri_means():
    a = _parse(
        "host=h1,h2 port=5433,5434 dbname=db user=u password=pw sslmode=disable "
        "target_session_attrs=read-write application_name=app connect_timeout=7"
    )
    b = _parse(
        "postgresql://u:pw@h1:5433,h2:5434/db?sslmode=disable&target_session_attrs=read-write"
        "&application_name=app&connect_timeout=7"
    )
    assert a == b
    addrs, params, _ = a
    assert addrs == [("h1", 5433), ("h2", 5434)]
    assert (params.user, params.password, params.database) == ("u", "pw", "db")
    assert params.server_settings == {"application_name": "app"}


def test_libpq_only_keywords_are_not_sent_as_settings():
    _, params, _ = _parse(
        "host=h user=u requiressl=1 fallback_application_name=fb keepalives=1 sslsni=1"
    )
    assert params.sslmode == connect_utils.SSLMode.require
    assert params.server_settings == {"application_name": "fb"}
    _, params, _ = _parse("postgresql://u@h/db?fallback_application_name=fb&application_name=a")
    assert params.server_settings == {"application_name": "a"}


@pytest.mark.parametrize("where", ["keyword", "uri", "conninfo"])
def test_load_balance_hosts_parsed_from_everywhere(where):
    if where == "keyword":
        _, params, _ = _parse("postgresql://u@h/db", load_balance_hosts="random")
    elif where == "uri":
        _, params, _ = _parse("postgresql://u@h/db?load_balance_hosts=random")
    else:
        _, params, _ = _parse("host=h user=u load_balance_hosts=random")
    assert params.load_balance_hosts == "random"
    assert params.server_settings is None  # not passed to the server as a setting


def test_load_balance_hosts_bad_value():
    with pytest.raises(exceptions.ClientConfigurationError, match="'sometimes'"):
        _parse("postgresql://u@h/db?load_balance_hosts=sometimes")


async def test_connect_with_conninfo(pg):
    dsn = f"host={pg.host} port={pg.port} user={pg.user} dbname={pg.database} sslmode=disable"
    con = await asyncpg_rs.connect(dsn)
    try:
        assert await con.fetchval("SELECT current_user") == pg.user
    finally:
        await con.close()


async def test_load_balance_hosts_random_spreads_connections(pg):
    """Three names for the same server: with random, every one of them gets picked first."""
    hosts = ["127.0.0.1", "127.0.0.2", "localhost"]
    firsts = collections.Counter()
    for _ in range(60):
        addrs, params, _ = _parse(
            None, host=hosts, port=pg.port, user=pg.user, load_balance_hosts="random"
        )
        order = await connect_utils._shuffled_addresses(asyncio.get_running_loop(), addrs)
        firsts[order[0][2] if len(order[0]) > 2 else order[0][0]] += 1
    assert set(firsts) == set(hosts), firsts
    # and real connections go through it
    seen = set()
    for _ in range(30):
        con = await asyncpg_rs.connect(
            host=["127.0.0.1", "localhost"],
            port=pg.port,
            user=pg.user,
            ssl=False,
            load_balance_hosts="random",
        )
        try:
            seen.add(await con.fetchval("SELECT host(inet_client_addr())"))
        finally:
            await con.close()
    assert seen  # both names reach the same server; the order test above shows the spread


async def test_load_balance_hosts_disable_keeps_the_order(pg):
    addrs, params, _ = _parse(None, host=["b", "a", "c"], port=pg.port, user=pg.user)
    assert params.load_balance_hosts == "disable"
    assert [a[0] for a in addrs] == ["b", "a", "c"]
