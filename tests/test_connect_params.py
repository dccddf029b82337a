"""Offline parsing of connect() arguments: DSNs, keywords, environment, .pgpass, sslmodes.

No server is needed. Where asyncpg 0.32 is importable, the same inputs are fed to its parser
and the results compared, so that a difference from the reference is a visible test failure.
"""

import os
import ssl

import pytest

from asyncpg_rs import connect_utils, exceptions

_PG_ENV = (
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGTARGETSESSIONATTRS",
    "PGSSLNEGOTIATION",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGKRBSRVNAME",
    "PGGSSLIB",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in _PG_ENV:
        monkeypatch.delenv(var, raising=False)
    # no ~/.pgpass or ~/.postgresql of the machine may leak into the results
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


def _parse(**kw):
    args = dict(
        dsn=None,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
        command_timeout=None,
        statement_cache_size=100,
        max_cached_statement_lifetime=300,
        max_cacheable_statement_size=15360,
    )
    args.update(kw)
    return connect_utils._parse_connect_arguments(**args)


# ---------------------------------------------------------------- offline parsing


def test_dsn_multiple_hosts_ipv6_unix_and_query(monkeypatch):
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    addrs, params, _ = _parse(
        dsn="postgresql://us%40er:p%3Aw@h1:5433,[::1]:5434,h3/my%2Fdb"
        "?sslmode=disable&application_name=app&search_path=s1"
    )
    assert addrs == [("h1", 5433), ("::1", 5434), ("h3", 5432)]
    assert params.user == "us@er" and params.password == "p:w" and params.database == "my/db"
    assert params.sslmode == connect_utils.SSLMode.disable
    assert params.server_settings == {"application_name": "app", "search_path": "s1"}
    addrs, _, _ = _parse(dsn="postgres:///db?host=/tmp&port=6000", user="u")
    assert addrs == ["/tmp/.s.PGSQL.6000"]


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("PGHOST", "a,b")
    monkeypatch.setenv("PGPORT", "1111,2222")
    monkeypatch.setenv("PGUSER", "envuser")
    monkeypatch.setenv("PGDATABASE", "envdb")
    monkeypatch.setenv("PGSSLMODE", "disable")
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "read-only")
    addrs, params, _ = _parse()
    assert addrs == [("a", 1111), ("b", 2222)]
    assert (params.user, params.database) == ("envuser", "envdb")
    assert params.target_session_attrs == "read-only"
    # keywords win over the environment
    addrs, params, _ = _parse(host="k", port=5, user="ku")
    assert addrs == [("k", 5)] and params.user == "ku"


@pytest.mark.parametrize(
    "kw, culprit",
    [
        (dict(dsn="mysql://x"), "scheme"),
        (dict(dsn="postgres://h:notaport/db"), "port"),
        (dict(host="h", port=70000), "port"),
        (dict(host="a,b,c", port="1,2"), "port"),
        (dict(host="h", ssl="sometimes"), "sslmode"),
        (dict(host="h", target_session_attrs="primaryish"), "target_session_attrs"),
        (dict(dsn="postgres://[::1/db"), "IPv6"),
    ],
)
def test_bad_configuration_is_reported_before_io(kw, culprit):
    with pytest.raises(exceptions.ClientConfigurationError) as ei:
        _parse(**kw)
    assert culprit in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_pgpass_wildcards_and_escapes(tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(
        "# comment\notherhost:*:*:*:nope\nh\\:x:5432:db:u:p\\:w\\\\1\n*:*:*:wild:wildpw\n"
    )
    os.chmod(pgpass, 0o600)
    _, params, _ = _parse(host="h:x", port=5432, database="db", user="u", passfile=str(pgpass))
    assert params.password == "p:w\\1"
    _, params, _ = _parse(host="any", user="wild", passfile=str(pgpass))
    assert params.password == "wildpw"
    os.chmod(pgpass, 0o644)
    with pytest.warns(UserWarning, match="permissions"):
        _, params, _ = _parse(host="any", user="wild", passfile=str(pgpass))
    assert params.password is None


# ---------------------------------------------------------------- against asyncpg 0.32

# Inputs whose parse must agree with asyncpg's: (addresses, user, password, database,
# sslmode, target_session_attrs, server settings).
_SAME_AS_ASYNCPG = [
    dict(dsn="postgresql://u:p@h1:5433,[::1]:5434,h3/my%2Fdb?sslmode=disable&application_name=a"),
    dict(dsn="postgres:///db?host=/tmp&port=6000", user="u"),
    dict(dsn="postgres://h/db?host=other"),
    dict(dsn="postgres://h:1/db", port=7),
    dict(dsn="postgres://h:1/db", host="k"),
    dict(dsn="postgres://u@h/db?user=q&dbname=z"),
    dict(dsn="postgres://h/db?target_session_attrs=primary&sslmode=require"),
    dict(dsn="postgres://h/db?target_session_attrs=prefer-standby", target_session_attrs="any"),
    dict(dsn="postgres://%2Ftmp/db"),
    dict(dsn="postgres://h/db?a=1&a=2&b="),
    dict(dsn="postgres://h/db?options=-c%20x%3D1", server_settings={"x": "y"}),
    dict(dsn="postgres://h/db?x=q", server_settings={"x": "kw"}),
    dict(host=["a", "b"], port=[1, 2]),
    dict(host=["a", "b"], port=3),
    dict(host="h", port="5555"),
    dict(dsn="postgresql://:5/d"),
    dict(dsn="postgresql://h/d?sslmode=prefer"),
    dict(dsn="postgresql://h/d?sslmode=allow", ssl="require"),
    dict(ssl="allow", host="h"),
    dict(ssl=False, host="h"),
    dict(host="/tmp"),
    dict(host="h", user="k", password="pw", database="d"),
    dict(host="h", ssl=True),
    dict(host="h", ssl=ssl.create_default_context()),
]


def _ours(**kw):
    return _parse(**kw)


def _reference(**kw):
    ref = pytest.importorskip("asyncpg.connect_utils")
    args = dict(
        dsn=None,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
        service=None,
        servicefile=None,
    )
    args.update(kw)
    addrs, params = ref._parse_connect_dsn_and_args(**args)
    return addrs, params


def _summary(addrs, params):
    attrs = params.target_session_attrs
    return (
        list(addrs),
        params.user,
        params.password,
        params.database,
        int(params.sslmode),
        getattr(attrs, "value", attrs),
        params.server_settings or None,
    )


@pytest.mark.parametrize("kw", _SAME_AS_ASYNCPG, ids=repr)
def test_parse_matches_asyncpg(kw):
    addrs, params = _reference(**kw)
    ours, our_params, _ = _ours(**kw)
    assert _summary(ours, our_params) == _summary(addrs, params)


def test_env_matches_asyncpg(monkeypatch):
    monkeypatch.setenv("PGHOST", "e1,e2")
    monkeypatch.setenv("PGPORT", "11,12")
    monkeypatch.setenv("PGUSER", "eu")
    monkeypatch.setenv("PGPASSWORD", "epw")
    monkeypatch.setenv("PGDATABASE", "edb")
    monkeypatch.setenv("PGSSLMODE", "allow")
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "read-write")
    for kw in ({}, {"host": ["k", "l"], "user": "ku"}):
        addrs, params = _reference(**kw)
        ours, our_params, _ = _ours(**kw)
        assert _summary(ours, our_params) == _summary(addrs, params), kw
    monkeypatch.setenv("PGPORT", "13")
    for kw in ({"dsn": "postgres://x/y"}, {"dsn": "postgres://x:9/y?sslmode=disable"}):
        addrs, params = _reference(**kw)
        ours, our_params, _ = _ours(**kw)
        assert _summary(ours, our_params) == _summary(addrs, params), kw


def test_pgpass_matches_asyncpg(tmp_path):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("h1:5432:db:u:first\n*:5433:*:u:second\nlocalhost:*:*:*:sock\n")
    os.chmod(pgpass, 0o600)
    for kw in (
        dict(host="h1", database="db", user="u"),
        dict(host=["nope", "h2"], port=[5432, 5433], user="u"),
        dict(host="/tmp", user="x"),
        dict(host="h1", database="other", user="u"),
    ):
        kw["passfile"] = str(pgpass)
        addrs, params = _reference(**kw)
        ours, our_params, _ = _ours(**kw)
        assert our_params.password == params.password, kw


# ---------------------------------------------------------------- deliberate differences


def test_keyword_host_and_port_accept_comma_lists():
    # asyncpg takes host="a,b" as one host name (which cannot resolve) and fails on "1,2";
    # libpq and our parser read them as lists, as they would be in PGHOST/PGPORT.
    addrs, _, _ = _parse(host="a,b", port="1,2")
    assert addrs == [("a", 1), ("b", 2)]
    addrs, _, _ = _parse(host="/tmp,h", port=5)
    assert addrs == ["/tmp/.s.PGSQL.5", ("h", 5)]


def test_missing_root_certificate_is_a_configuration_error(tmp_path):
    with pytest.raises(exceptions.ClientConfigurationError, match="sslrootcert"):
        _parse(dsn=f"postgresql://h/d?sslmode=verify-full&sslrootcert={tmp_path}/none.crt")
    with pytest.raises(exceptions.ClientConfigurationError, match="root.crt"):
        _parse(host="h", ssl="verify-ca")


@pytest.mark.parametrize(
    "kw, culprit",
    [
        (dict(dsn="postgres://h:0/db"), "port"),
        (dict(host="h", port="x"), "port"),
        (dict(host="h", ssl=42), "ssl"),
        (dict(host="h", direct_tls=True, ssl="prefer"), "direct_tls"),
        (
            dict(dsn="postgres://h/d?ssl_min_protocol_version=SSLv3", ssl="require"),
            "ssl_minimum_protocol_version",
        ),
        (dict(host="h", server_settings={"a": 1}), "server_settings"),
    ],
)
def test_more_bad_configuration(kw, culprit):
    with pytest.raises(exceptions.ClientConfigurationError) as ei:
        _parse(**kw)
    assert culprit in str(ei.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("command_timeout", -1),
        ("command_timeout", "x"),
        ("statement_cache_size", -1),
        ("max_cached_statement_lifetime", "x"),
        ("max_cacheable_statement_size", -5),
    ],
)
def test_bad_client_configuration(name, value):
    with pytest.raises(ValueError, match=name):
        _parse(host="h", **{name: value})


def test_sslmode_enum_and_ssl_objects():
    assert connect_utils.SSLMode.parse("verify-full") is connect_utils.SSLMode.verify_full
    assert connect_utils.SSLMode.prefer < connect_utils.SSLMode.require
    _, params, _ = _parse(host="h", ssl=True)
    assert params.sslmode == connect_utils.SSLMode.verify_full and params.ssl.check_hostname
    _, params, _ = _parse(host="h", ssl="require")
    assert params.ssl is not None and not params.ssl.check_hostname
    _, params, _ = _parse(host="h", ssl="disable")
    assert params.ssl is None
    _, params, config = _parse(host="h", command_timeout=2, statement_cache_size=0)
    assert (config.command_timeout, config.statement_cache_size) == (2.0, 0)


def test_direct_tls_from_environment(monkeypatch):
    monkeypatch.setenv("PGSSLNEGOTIATION", "direct")
    _, params, _ = _parse(host="h", ssl="require")
    assert params.direct_tls is True


# ---------------------------------------------------------------- services, timeouts, PGAPPNAME


def test_service_file(tmp_path, monkeypatch):
    conf = tmp_path / "services.conf"
    conf.write_text(
        "[svc]\nhost=sh1,sh2\nport=7001,7002\ndbname=sdb\nuser=su\n"
        "sslmode=disable\napplication_name=from%service\n"
        "target_session_attrs=read-only\n"
    )
    addrs, params, _ = _parse(service="svc", servicefile=str(conf))
    assert addrs == [("sh1", 7001), ("sh2", 7002)]
    assert (params.user, params.database) == ("su", "sdb")
    assert params.sslmode == connect_utils.SSLMode.disable
    assert params.target_session_attrs == "read-only"
    assert params.server_settings == {"application_name": "from%service"}
    # the DSN (netloc and query) wins over the service; the service over the environment
    monkeypatch.setenv("PGSERVICEFILE", str(conf))
    monkeypatch.setenv("PGUSER", "envuser")
    addrs, params, _ = _parse(dsn="postgres://h:1/d?service=svc&application_name=q")
    assert addrs == [("h", 1)] and params.database == "d" and params.user == "su"
    assert params.server_settings == {"application_name": "q"}
    monkeypatch.setenv("PGSERVICE", "svc")
    addrs, params, _ = _parse(host="k", port=5)
    assert addrs == [("k", 5)] and params.user == "su"
    with pytest.raises(exceptions.ClientConfigurationError, match="nosuch"):
        _parse(service="nosuch")


def test_connect_timeout_and_appname(monkeypatch):
    _, params, _ = _parse(dsn="postgres://h/d?connect_timeout=5")
    assert params.connect_timeout == 5.0 and not params.server_settings
    _, params, _ = _parse(dsn="postgres://h/d?connect_timeout=1")
    assert params.connect_timeout == 2.0  # libpq's minimum
    _, params, _ = _parse(dsn="postgres://h/d?connect_timeout=0")
    assert params.connect_timeout is None
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    _, params, _ = _parse(host="h")
    assert params.connect_timeout == 7.0
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "soon")
    with pytest.raises(exceptions.ClientConfigurationError, match="connect_timeout"):
        _parse(host="h")
    monkeypatch.delenv("PGCONNECT_TIMEOUT")
    monkeypatch.setenv("PGAPPNAME", "envapp")
    _, params, _ = _parse(host="h")
    assert params.server_settings == {"application_name": "envapp"}
    _, params, _ = _parse(host="h", server_settings={"application_name": "kw"})
    assert params.server_settings == {"application_name": "kw"}
