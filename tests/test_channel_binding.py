"""SCRAM-SHA-256-PLUS with ``tls-server-end-point`` channel binding, as libpq's
``channel_binding=disable|prefer|require``, against the throwaway cluster's TLS and roles."""

from __future__ import annotations

import pytest
from test_connect_params import _parse

import asyncpg_rs
from asyncpg_rs import _channel_binding, exceptions


def _kwargs(pg, pg_roles, method, **kw):
    user, password = pg_roles[method]
    return pg.connect_kwargs(user=user, password=password, **kw)


@pytest.mark.parametrize("mode", ["prefer", "require"])
async def test_scram_plus_over_tls(pg, pg_roles, mode):
    con = await asyncpg_rs.connect(
        **_kwargs(pg, pg_roles, "scram", ssl="require", channel_binding=mode)
    )
    try:
        assert await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await con.close()


async def test_binding_really_binds(pg, pg_roles, monkeypatch):
    """Binding data that does not match the server's certificate (what a man in the middle
    with another certificate would produce) fails the login under prefer and require, and is
    not used under disable."""
    monkeypatch.setattr(
        _channel_binding, "tls_server_end_point", lambda der: b"\0" * 32, raising=True
    )
    for mode in ("prefer", "require"):
        with pytest.raises(exceptions.PostgresError) as info:
            await asyncpg_rs.connect(
                **_kwargs(pg, pg_roles, "scram", ssl="require", channel_binding=mode)
            )
        assert "channel binding" in str(info.value).lower()
    con = await asyncpg_rs.connect(
        **_kwargs(pg, pg_roles, "scram", ssl="require", channel_binding="disable")
    )
    await con.close()


async def test_require_refuses_a_login_without_binding(pg, pg_roles):
    # trust: the server accepts without any SCRAM exchange
    with pytest.raises(exceptions.InterfaceError, match="without channel binding"):
        await asyncpg_rs.connect(
            **_kwargs(pg, pg_roles, "trust", ssl="require", channel_binding="require")
        )
    # md5 and cleartext password requests cannot bind
    for method in ("md5", "password"):
        with pytest.raises(exceptions.InterfaceError, match="does not support it") as info:
            await asyncpg_rs.connect(
                **_kwargs(pg, pg_roles, method, ssl="require", channel_binding="require")
            )
        assert pg_roles[method][1] not in str(info.value)


async def test_require_needs_tls(pg, pg_roles):
    with pytest.raises(exceptions.ClientConfigurationError, match="sslmode is disable"):
        await asyncpg_rs.connect(
            **_kwargs(pg, pg_roles, "scram", ssl="disable", channel_binding="require")
        )
    dsn = pg.dsn(*pg_roles["scram"], sslmode="disable", channel_binding="require")
    with pytest.raises(exceptions.ClientConfigurationError, match="sslmode is disable"):
        await asyncpg_rs.connect(dsn)


async def test_prefer_without_tls_still_logs_in(pg, pg_roles):
    con = await asyncpg_rs.connect(
        **_kwargs(pg, pg_roles, "scram", ssl="disable", channel_binding="prefer")
    )
    await con.close()


def test_channel_binding_bad_value():
    with pytest.raises(exceptions.ClientConfigurationError, match="'always'"):
        _parse(dsn="postgresql://u@h/db?channel_binding=always")
