"""Connection parameters: connect()'s arguments, a DSN, libpq's environment variables,
``.pgpass`` and ``pg_service.conf`` turned into addresses, :class:`ConnectionParameters` and
:class:`ClientConfiguration`.

Semantics follow asyncpg (and libpq where asyncpg follows libpq): multiple hosts tried in
order, unix-socket directories, ``sslmode`` with libpq's meaning, ``target_session_attrs``.
Everything that can be wrong with the arguments is reported as
:class:`~asyncpg_rs.exceptions.ClientConfigurationError` before any network I/O.
Connecting with the result is :mod:`asyncpg_rs.connect_utils`' job.
"""

from __future__ import annotations

import configparser
import enum
import getpass
import os
import pathlib
import re
import ssl as ssl_module
import stat
import typing
import urllib.parse
import warnings

from . import _conninfo, exceptions

__all__ = (
    "ConnectionParameters",
    "ClientConfiguration",
    "SSLMode",
    "SSLNegotiation",
    "SessionAttribute",
)


class SSLMode(enum.IntEnum):
    """libpq's sslmode values, ordered from least to most strict."""

    disable = 0
    allow = 1
    prefer = 2
    require = 3
    verify_ca = 4
    verify_full = 5

    @classmethod
    def parse(cls, sslmode):
        """The member for ``sslmode`` (a member or a libpq name such as ``'verify-ca'``)."""
        if isinstance(sslmode, cls):
            return sslmode
        try:
            return getattr(cls, str(sslmode).replace("-", "_"))
        except AttributeError:
            names = ", ".join(m.name.replace("_", "-") for m in cls)
            raise exceptions.ClientConfigurationError(
                f"`sslmode` parameter must be one of: {names}; got {sslmode!r}"
            ) from None


class SSLNegotiation(str, enum.Enum):
    postgres = "postgres"
    direct = "direct"


class ConnectionParameters(typing.NamedTuple):
    """What identifies a session: who, where to, and how securely."""

    user: str
    password: typing.Any
    database: str
    ssl: typing.Any
    sslmode: SSLMode
    direct_tls: bool
    server_settings: typing.Optional[dict]
    target_session_attrs: str
    krbsrvname: typing.Optional[str]
    gsslib: typing.Optional[str]
    #: libpq's per-host connect_timeout (DSN, service or PGCONNECT_TIMEOUT); connect()'s
    #: ``timeout`` still bounds the whole attempt
    connect_timeout: typing.Optional[float] = None
    #: libpq 16's ``load_balance_hosts``: ``"random"`` tries hosts, and the addresses of each
    #: host, in random order
    load_balance_hosts: str = "disable"
    #: libpq's ``channel_binding``: SCRAM-SHA-256-PLUS over TLS (``prefer``, ``require``) or
    #: never (``disable``)
    channel_binding: str = "prefer"


class ClientConfiguration(typing.NamedTuple):
    """Client-side behaviour of a connection."""

    command_timeout: typing.Optional[float]
    statement_cache_size: int
    max_cached_statement_lifetime: float
    max_cacheable_statement_size: int


# Magic request codes in the length+code header of PostgreSQL's pre-startup messages.


class SessionAttribute(str, enum.Enum):
    """``target_session_attrs`` values (as in asyncpg; plain strings are accepted too)."""

    any = "any"
    primary = "primary"
    standby = "standby"
    prefer_standby = "prefer-standby"
    read_write = "read-write"
    read_only = "read-only"


_TARGET_ATTRS = tuple(a.value for a in SessionAttribute)
_DEFAULT_PORT = 5432
_UNIX_SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql", "/tmp", "/private/tmp")


def _mode_name(mode):
    return mode.name.replace("_", "-")


def _bad(msg):
    return exceptions.ClientConfigurationError(msg)


# ------------------------------------------------------------------ DSN


def _split_hostspec(hostspec):
    """``h1:5432,[::1]:5433,/tmp`` -> (["h1", "::1", "/tmp"], ["5432", "5433", None])."""
    hosts, ports = [], []
    for part in hostspec.split(","):
        if not part:
            continue
        if part.startswith("["):
            end = part.find("]")
            if end < 0:
                raise _bad(f"invalid DSN: unterminated IPv6 address in {hostspec!r}")
            host = part[1:end]
            rest = part[end + 1 :]
            if rest and not rest.startswith(":"):
                raise _bad(f"invalid DSN: unexpected {rest!r} after IPv6 address")
            port = rest[1:] if rest else None
        elif part.startswith("/") or part.startswith("%2F") or part.startswith("%2f"):
            host, port = part, None
        elif part.count(":") == 1:
            host, port = part.split(":")
        elif ":" in part:
            raise _bad(f"invalid DSN: IPv6 addresses must be enclosed in [] ({part!r})")
        else:
            host, port = part, None
        hosts.append(urllib.parse.unquote(host))
        ports.append(urllib.parse.unquote(port) if port else None)
    return hosts, ports


def _parse_dsn(dsn):
    if _conninfo.looks_like_conninfo(dsn):
        # as a URI's query parameters, blank values set nothing
        return {}, {k: v for k, v in _conninfo.parse_conninfo(dsn).items() if v != ""}
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", dsn, re.DOTALL)
    if m is None:
        raise _bad(
            f'invalid DSN: scheme is expected to be either "postgresql" or "postgres", got {dsn!r}'
        )
    scheme, rest = m.groups()
    if scheme not in ("postgres", "postgresql"):
        raise _bad(
            'invalid DSN: scheme is expected to be either "postgresql" or "postgres", '
            f"got {scheme!r}"
        )
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
    path = ""
    if "/" in rest:
        netloc, path = rest.split("/", 1)
    else:
        netloc = rest
    userinfo = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
    out = {}
    if userinfo is not None:
        if ":" in userinfo:
            user, password = userinfo.split(":", 1)
            out["password"] = urllib.parse.unquote(password)
        else:
            user = userinfo
        if user:
            out["user"] = urllib.parse.unquote(user)
    if netloc:
        hosts, ports = _split_hostspec(netloc)
        if hosts:
            out["host"] = hosts
        if any(p is not None for p in ports):
            out["port"] = ports
    if path:
        out["database"] = urllib.parse.unquote(path)
    params = {}
    if query:
        # blank values are dropped, as asyncpg does: `?opt=` sets nothing
        for key, values in urllib.parse.parse_qs(query, strict_parsing=False).items():
            params[key] = values[-1]
    return out, params


# ------------------------------------------------------------------ pgpass


def _read_passfile(passfile):
    try:
        st = os.stat(passfile)
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode):
        warnings.warn(f"password file {passfile!r} is not a plain file", stacklevel=4)
        return []
    if os.name != "nt" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"password file {passfile!r} has group or world access; "
            "permissions should be u=rw (0600) or less",
            stacklevel=4,
        )
        return []
    entries = []
    try:
        with open(passfile, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line.lstrip().startswith("#"):
                    continue
                fields, cur, esc = [], [], False
                for ch in line:
                    if esc:
                        cur.append(ch)
                        esc = False
                    elif ch == "\\":
                        esc = True
                    elif ch == ":":
                        fields.append("".join(cur))
                        cur = []
                    else:
                        cur.append(ch)
                fields.append("".join(cur))
                if len(fields) == 5:
                    entries.append(fields)
    except OSError:
        return []
    return entries


def _password_from_passfile(entries, host, port, database, user):
    if host.startswith("/"):
        host = "localhost"
    for h, p, d, u, password in entries:
        if h in ("*", host) and p in ("*", str(port)) and d in ("*", database) and u in ("*", user):
            return password
    return None


# ------------------------------------------------------------------ pg_service.conf


def _read_service(service, servicefile):
    """The named section of the connection service file, as a dict of libpq keywords."""
    if servicefile is None:
        servicefile = os.environ.get("PGSERVICEFILE")
    if servicefile is None:
        try:
            servicefile = pathlib.Path.home() / ".pg_service.conf"
        except (RuntimeError, KeyError):
            servicefile = None
    parser = configparser.ConfigParser(interpolation=None)
    if servicefile is not None:
        try:
            parser.read(os.fspath(servicefile), encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as e:
            raise _bad(
                f"could not parse the service file {os.fspath(servicefile)!r}: {e}"
            ) from None
    if not parser.has_section(service):
        where = os.fspath(servicefile) if servicefile is not None else "no service file"
        raise _bad(f"definition of service {service!r} not found ({where})")
    return dict(parser.items(service))


# ------------------------------------------------------------------ SSL


def _dot_postgresql_path(name):
    try:
        home = pathlib.Path.home()
    except (RuntimeError, KeyError):
        return None
    return home / ".postgresql" / name


def _build_ssl_context(
    sslmode, sslrootcert, sslcert, sslkey, sslcrl, sslpassword, min_version, max_version
):
    ctx = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = sslmode >= SSLMode.verify_full
    if sslrootcert is None and sslmode >= SSLMode.verify_ca:
        default = _dot_postgresql_path("root.crt")
        if default is not None and default.exists():
            sslrootcert = str(default)
        else:
            raise _bad(
                'root certificate file "~/.postgresql/root.crt" does not exist or cannot '
                "be accessed; provide sslrootcert or use sslmode=require"
            )
    if sslrootcert is not None:
        try:
            ctx.load_verify_locations(cafile=os.fspath(sslrootcert))
        except (OSError, ssl_module.SSLError) as e:
            raise _bad(f"could not read sslrootcert {sslrootcert!r}: {e}") from e
        if sslmode == SSLMode.require:
            # libpq: a root certificate given with sslmode=require means verify-ca
            sslmode = SSLMode.verify_ca
    if sslmode >= SSLMode.verify_ca:
        ctx.verify_mode = ssl_module.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl_module.CERT_NONE
    if sslcrl is not None:
        try:
            ctx.load_verify_locations(cafile=os.fspath(sslcrl))
        except (OSError, ssl_module.SSLError) as e:
            raise _bad(f"could not read sslcrl {sslcrl!r}: {e}") from e
        ctx.verify_flags |= ssl_module.VERIFY_CRL_CHECK_CHAIN
    if sslcert is None:
        default = _dot_postgresql_path("postgresql.crt")
        if default is not None and default.exists():
            sslcert = str(default)
    if sslkey is None and sslcert is not None:
        default = _dot_postgresql_path("postgresql.key")
        if default is not None and default.exists():
            sslkey = str(default)
    if sslcert is not None:
        try:
            ctx.load_cert_chain(
                os.fspath(sslcert), keyfile=sslkey and os.fspath(sslkey), password=sslpassword
            )
        except (OSError, ssl_module.SSLError) as e:
            raise _bad(f"could not load the client certificate {sslcert!r}: {e}") from e
    versions = {
        "TLSv1": ssl_module.TLSVersion.TLSv1,
        "TLSv1.1": ssl_module.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl_module.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl_module.TLSVersion.TLSv1_3,
    }
    for value, attr in (
        (min_version or "TLSv1.2", "minimum_version"),
        (max_version, "maximum_version"),
    ):
        if value is None:
            continue
        if value not in versions:
            raise _bad(
                f"ssl_{attr.split('_')[0]}_protocol_version must be one of "
                f"{', '.join(versions)}; got {value!r}"
            )
        setattr(ctx, attr, versions[value])
    return ctx, sslmode


# ------------------------------------------------------------------ parsing

# Options a DSN's query string (or a service definition) may carry, by the name connect()'s
# parsing uses; a tuple lists the accepted spellings, the first one preferred.
_QUERY_OPTIONS = {
    "host": ("host",),
    "port": ("port",),
    "user": ("user",),
    "password": ("password",),
    "passfile": ("passfile",),
    "database": ("dbname", "database"),
    "sslmode": ("sslmode",),
    "sslrootcert": ("sslrootcert",),
    "sslcert": ("sslcert",),
    "sslkey": ("sslkey",),
    "sslcrl": ("sslcrl",),
    "sslpassword": ("sslpassword",),
    "sslnegotiation": ("sslnegotiation",),
    "ssl_min_protocol_version": ("ssl_min_protocol_version",),
    "ssl_max_protocol_version": ("ssl_max_protocol_version",),
    "target_session_attrs": ("target_session_attrs",),
    "krbsrvname": ("krbsrvname",),
    "gsslib": ("gsslib",),
    "connect_timeout": ("connect_timeout",),
    "load_balance_hosts": ("load_balance_hosts",),
    "channel_binding": ("channel_binding",),
    # libpq keywords that are not session settings, which a URI would otherwise pass on
    "requiressl": ("requiressl",),
    "fallback_application_name": ("fallback_application_name",),
    "gssencmode": ("gssencmode",),
    **{key: (key,) for key in sorted(_conninfo.NO_EFFECT_KEYWORDS)},
}


def _dsn_sources(
    dsn: str | None, service: str | None, servicefile: str | os.PathLike[str] | None
) -> tuple[dict[str, typing.Any], dict[str, str | None], dict[str, str]]:
    """Read the DSN and the service definition: (the DSN's host/port/user/password/database,
    the known query-string or service options, the rest of the query string — which
    become server settings)."""
    dsn_params: dict[str, typing.Any] = {}
    extra: dict[str, str] = {}
    if dsn:
        parsed, extra = _parse_dsn(dsn)
        dsn_params.update(parsed)

    q_service = extra.pop("service", None)
    if service is None:
        service = q_service or os.environ.get("PGSERVICE")
    svc = _read_service(service, servicefile) if service else {}
    # libpq lets a service carry session settings too; the DSN's own ones win
    for key in ("application_name", "options"):
        if key in svc and key not in extra:
            extra[key] = svc[key]

    def take(names: tuple[str, ...]) -> str | None:
        # the DSN's query string first, then the service definition
        for key in names:
            if key in extra:
                return extra.pop(key)
        for key in names:
            if key in svc:
                return svc[key]
        return None

    options = {name: take(names) for name, names in _QUERY_OPTIONS.items()}
    return dsn_params, options, extra


def _hosts_and_ports(
    host: typing.Any,
    port: typing.Any,
    dsn_params: dict[str, typing.Any],
    options: dict[str, str | None],
) -> tuple[list[str], list[int]]:
    """Hosts and their ports: keyword > DSN > query string > environment > defaults."""
    env = os.environ
    if host is None:
        host = dsn_params.get("host")
    elif port is None and "port" in dsn_params:
        # the DSN's ports belong to the DSN's hosts, which the keyword replaced
        port = None
        dsn_params.pop("port")
    q_host = options["host"]
    if host is None and q_host is not None:
        host = _split_hostspec(q_host)[0] if not q_host.startswith("/") else q_host.split(",")
    if host is None and env.get("PGHOST"):
        host = env["PGHOST"].split(",")
    if port is None:
        port = dsn_params.get("port")
    if port is None and options["port"] is not None:
        port = options["port"].split(",")
    if port is None and env.get("PGPORT"):
        port = env["PGPORT"].split(",")

    if host is None:
        host = [d for d in _UNIX_SOCKET_DIRS if os.path.isdir(d)] + ["localhost"]
    elif isinstance(host, str):
        host = [h for h in host.split(",")]
    else:
        host = list(host)
    if not host:
        raise _bad("invalid connection parameters: no host")
    return host, _ports_for(port, len(host))


def _ports_for(port: typing.Any, n_hosts: int) -> list[int]:
    """One validated port per host (a single port serves them all)."""
    if port is None:
        return [_DEFAULT_PORT] * n_hosts
    if isinstance(port, (int, str)):
        port = [port] if isinstance(port, int) else port.split(",")
    port = [_DEFAULT_PORT if p in (None, "") else p for p in port]
    parsed_ports = []
    for p in port:
        try:
            value = int(p)
        except (TypeError, ValueError):
            raise _bad(f"invalid port {p!r}: a port must be an integer") from None
        if not 0 < value < 65536:
            raise _bad(f"invalid port {p!r}: a port must be between 1 and 65535")
        parsed_ports.append(value)
    if len(parsed_ports) == 1:
        return parsed_ports * n_hosts
    if len(parsed_ports) != n_hosts:
        raise _bad(f"could not match {len(parsed_ports)} port numbers to {n_hosts} hosts")
    return parsed_ports


def _identity(
    user: str | None,
    password: typing.Any,
    database: str | None,
    dsn_params: dict[str, typing.Any],
    options: dict[str, str | None],
) -> tuple[str, typing.Any, str]:
    """(user, password or None, database): keyword > DSN > query string > environment;
    the user defaults to the login name, the database to the user."""
    env = os.environ
    if user is None:
        user = dsn_params.get("user") or options["user"] or env.get("PGUSER")
    if user is None:
        try:
            user = getpass.getuser()
        except Exception as e:  # noqa: BLE001 - no login name in this environment
            raise _bad("could not determine the user name; pass user=") from e
    if password is None:
        password = dsn_params.get("password") or options["password"] or env.get("PGPASSWORD")
    if database is None:
        database = dsn_params.get("database") or options["database"] or env.get("PGDATABASE")
        database = database or user
    return user, password, database


def _passfile_path(
    passfile: str | os.PathLike[str] | None, options: dict[str, str | None]
) -> str | os.PathLike[str] | None:
    """The password file to consult: keyword > query string > PGPASSFILE > ~/.pgpass."""
    if passfile is None:
        passfile = options["passfile"] or os.environ.get("PGPASSFILE")
    if passfile is None:
        try:
            passfile = str(pathlib.Path.home() / ".pgpass")
        except (RuntimeError, KeyError):
            passfile = None
    return passfile


def _addresses(hosts: list[str], ports: list[int]) -> list[str | tuple[str, int]]:
    """(host, port) pairs; a host that is a directory names a unix socket in it."""
    addrs: list[str | tuple[str, int]] = []
    for h, p in zip(hosts, ports):
        if h.startswith("/"):
            addrs.append(os.path.join(h, f".s.PGSQL.{p}"))
        else:
            addrs.append((h, p))
    return addrs


def _password_from_pgpass(
    passfile: str | os.PathLike[str],
    hosts: list[str],
    ports: list[int],
    database: str,
    user: str,
) -> str | None:
    """The password ``.pgpass`` gives: the first address with a matching entry supplies it."""
    entries = _read_passfile(passfile)
    if entries:
        for h, p in zip(hosts, ports):
            found = _password_from_passfile(entries, h, p, database, user)
            if found is not None:
                return found
    return None


def _target_session_attrs(value: str | None, options: dict[str, str | None]) -> str:
    """``target_session_attrs``: keyword > query string > PGTARGETSESSIONATTRS > any."""
    if value is None:
        value = options["target_session_attrs"] or os.environ.get("PGTARGETSESSIONATTRS") or "any"
    if value not in _TARGET_ATTRS:
        raise _bad(
            f"target_session_attrs is expected to be one of {', '.join(map(repr, _TARGET_ATTRS))}"
            f", got {value!r}"
        )
    return SessionAttribute(value).value


def _tls(
    ssl: typing.Any,
    direct_tls: bool | None,
    addrs: list[str | tuple[str, int]],
    options: dict[str, str | None],
) -> tuple[ssl_module.SSLContext | None, SSLMode, bool]:
    """(SSL context or None, sslmode, direct TLS) from ``ssl=``, ``direct_tls=``, the query
    string and libpq's PGSSL* variables."""
    env = os.environ
    sslneg = options["sslnegotiation"] or env.get("PGSSLNEGOTIATION")
    if direct_tls is None:
        direct_tls = sslneg == "direct" if sslneg else False
    elif sslneg not in (None, "postgres", "direct"):
        raise _bad(f"sslnegotiation must be 'postgres' or 'direct', got {sslneg!r}")
    sslrootcert = options["sslrootcert"] or env.get("PGSSLROOTCERT")
    sslcert = options["sslcert"] or env.get("PGSSLCERT")
    sslkey = options["sslkey"] or env.get("PGSSLKEY")
    sslcrl = options["sslcrl"] or env.get("PGSSLCRL")
    sslpassword = options["sslpassword"]
    if ssl is None:
        ssl = options["sslmode"] or env.get("PGSSLMODE")
    if ssl is None:
        # libpq: TLS is pointless over unix sockets, so an all-socket list means disable
        ssl = "disable" if all(isinstance(a, str) for a in addrs) else "prefer"
    if isinstance(ssl, ssl_module.SSLContext):
        # as asyncpg: a caller's context means "TLS required"; the context itself decides
        # how much is verified
        sslmode = SSLMode.require
        ssl_ctx = ssl
    elif ssl is True:
        sslmode = SSLMode.verify_full
        ssl_ctx = ssl_module.create_default_context()
    elif ssl is False:
        sslmode, ssl_ctx = SSLMode.disable, None
    elif isinstance(ssl, (str, SSLMode)):
        sslmode = SSLMode.parse(ssl)
        ssl_ctx = None
        if sslmode > SSLMode.disable:
            ssl_ctx, sslmode = _build_ssl_context(
                sslmode,
                sslrootcert,
                sslcert,
                sslkey,
                sslcrl,
                sslpassword,
                options["ssl_min_protocol_version"],
                options["ssl_max_protocol_version"],
            )
    else:
        raise _bad(
            f"ssl is expected to be a bool, an ssl.SSLContext or an sslmode string, got {ssl!r}"
        )
    if direct_tls and sslmode < SSLMode.require:
        raise _bad(
            f"direct TLS requires sslmode require, verify-ca or verify-full "
            f"(direct_tls / sslnegotiation=direct with sslmode {_mode_name(sslmode)})"
        )
    return ssl_ctx, sslmode, bool(direct_tls)


def _connect_timeout(options: dict[str, str | None]) -> float | None:
    """libpq's per-host ``connect_timeout``: seconds; zero or less waits forever, and under
    2 means 2."""
    connect_timeout = options["connect_timeout"] or os.environ.get("PGCONNECT_TIMEOUT")
    if connect_timeout is None:
        return None
    try:
        seconds = float(connect_timeout)
    except ValueError:
        raise _bad(
            f"invalid connect_timeout {connect_timeout!r}: expected a number of seconds"
        ) from None
    return None if seconds <= 0 else max(seconds, 2.0)


def _load_balance_hosts(value: str | None, options: dict[str, str | None]) -> str:
    """libpq 16's ``load_balance_hosts``: keyword > query string > PGLOADBALANCEHOSTS."""
    if value is None:
        value = options["load_balance_hosts"] or os.environ.get("PGLOADBALANCEHOSTS") or "disable"
    if value not in ("disable", "random"):
        raise _bad(f"invalid load_balance_hosts value: {value!r} (expected 'disable' or 'random')")
    return value


def _channel_binding(value: str | None, sslmode: SSLMode, options: dict[str, str | None]) -> str:
    """libpq's ``channel_binding``: keyword > query string > PGCHANNELBINDING > prefer."""
    if value is None:
        value = options["channel_binding"] or os.environ.get("PGCHANNELBINDING") or "prefer"
    if value not in ("disable", "prefer", "require"):
        raise _bad(
            f"invalid channel_binding value: {value!r} (expected 'disable', 'prefer' or 'require')"
        )
    if value == "require" and sslmode == SSLMode.disable:
        raise _bad("channel_binding=require needs TLS, but sslmode is disable")
    return value


def _server_settings(
    extra: dict[str, str], server_settings: typing.Any, fallback_application_name: str | None
) -> dict[str, str] | None:
    """The session settings sent at startup: the DSN's unknown options, PGAPPNAME (or libpq's
    ``fallback_application_name``), then ``server_settings=``."""
    settings = {}
    if extra:
        settings.update(extra)
    if "application_name" not in settings and os.environ.get("PGAPPNAME"):
        settings["application_name"] = os.environ["PGAPPNAME"]
    if "application_name" not in settings and fallback_application_name:
        settings["application_name"] = fallback_application_name
    if server_settings:
        if not isinstance(server_settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in server_settings.items()
        ):
            raise _bad("server_settings is expected to be None or a Dict[str, str]")
        settings.update(server_settings)
    return settings or None


def _client_configuration(
    command_timeout: typing.Any,
    statement_cache_size: typing.Any,
    max_cached_statement_lifetime: typing.Any,
    max_cacheable_statement_size: typing.Any,
) -> ClientConfiguration:
    """Validate the client-side knobs (``ValueError`` on a bad one, as asyncpg)."""
    if command_timeout is not None:
        try:
            if isinstance(command_timeout, bool):
                raise ValueError
            command_timeout = float(command_timeout)
            if command_timeout <= 0:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"invalid command_timeout value: expected greater than 0 float "
                f"(got {command_timeout!r})"
            ) from None
    for name, value in (
        ("statement_cache_size", statement_cache_size),
        ("max_cached_statement_lifetime", max_cached_statement_lifetime),
        ("max_cacheable_statement_size", max_cacheable_statement_size),
    ):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} is expected to be greater or equal to 0, got {value!r}")
    return ClientConfiguration(
        command_timeout=command_timeout,
        statement_cache_size=statement_cache_size,
        max_cached_statement_lifetime=max_cached_statement_lifetime,
        max_cacheable_statement_size=max_cacheable_statement_size,
    )


def _parse_connect_dsn_and_args(
    *,
    dsn: str | None,
    host: typing.Any,
    port: typing.Any,
    user: str | None,
    password: typing.Any,
    passfile: str | os.PathLike[str] | None,
    database: str | None,
    ssl: typing.Any,
    direct_tls: bool | None,
    server_settings: typing.Any,
    target_session_attrs: str | None,
    krbsrvname: str | None,
    gsslib: str | None,
    service: str | None = None,
    servicefile: str | os.PathLike[str] | None = None,
    load_balance_hosts: str | None = None,
    channel_binding: str | None = None,
) -> tuple[list[str | tuple[str, int]], ConnectionParameters]:
    """Turn connect()'s session arguments into (addresses, ConnectionParameters)."""
    env = os.environ
    dsn_params, options, extra = _dsn_sources(dsn, service, servicefile)
    hosts, ports = _hosts_and_ports(host, port, dsn_params, options)
    user, password, database = _identity(user, password, database, dsn_params, options)
    passfile = _passfile_path(passfile, options)
    addrs = _addresses(hosts, ports)
    if password is None and passfile:
        password = _password_from_pgpass(passfile, hosts, ports, database, user)
    target_session_attrs = _target_session_attrs(target_session_attrs, options)
    if options["requiressl"] == "1" and options["sslmode"] is None:
        options["sslmode"] = "require"  # libpq's deprecated spelling
    if options["gssencmode"] == "require":
        raise _bad("gssencmode=require: GSSAPI encryption is not supported")
    ssl_ctx, sslmode, direct_tls = _tls(ssl, direct_tls, addrs, options)
    channel_binding = _channel_binding(channel_binding, sslmode, options)
    if krbsrvname is None:
        krbsrvname = options["krbsrvname"] or env.get("PGKRBSRVNAME")
    if gsslib is None:
        gsslib = options["gsslib"] or env.get("PGGSSLIB")
    connect_timeout = _connect_timeout(options)
    params = ConnectionParameters(
        user=user,
        password=password,
        database=database,
        ssl=ssl_ctx,
        sslmode=sslmode,
        direct_tls=direct_tls,
        server_settings=_server_settings(
            extra, server_settings, options["fallback_application_name"]
        ),
        target_session_attrs=target_session_attrs,
        krbsrvname=krbsrvname,
        gsslib=gsslib,
        connect_timeout=connect_timeout,
        load_balance_hosts=_load_balance_hosts(load_balance_hosts, options),
        channel_binding=channel_binding,
    )
    return addrs, params


def _parse_connect_arguments(
    *,
    dsn: str | None,
    host: typing.Any,
    port: typing.Any,
    user: str | None,
    password: typing.Any,
    passfile: str | os.PathLike[str] | None,
    database: str | None,
    ssl: typing.Any,
    direct_tls: bool | None,
    server_settings: typing.Any,
    target_session_attrs: str | None,
    krbsrvname: str | None,
    gsslib: str | None,
    command_timeout: typing.Any,
    statement_cache_size: typing.Any,
    max_cached_statement_lifetime: typing.Any,
    max_cacheable_statement_size: typing.Any,
    service: str | None = None,
    servicefile: str | os.PathLike[str] | None = None,
    load_balance_hosts: str | None = None,
    channel_binding: str | None = None,
) -> tuple[list[str | tuple[str, int]], ConnectionParameters, ClientConfiguration]:
    """Turn connect()'s arguments into (addresses, ConnectionParameters, ClientConfiguration)."""
    addrs, params = _parse_connect_dsn_and_args(
        dsn=dsn,
        host=host,
        port=port,
        user=user,
        password=password,
        passfile=passfile,
        database=database,
        ssl=ssl,
        direct_tls=direct_tls,
        server_settings=server_settings,
        target_session_attrs=target_session_attrs,
        krbsrvname=krbsrvname,
        gsslib=gsslib,
        service=service,
        servicefile=servicefile,
        load_balance_hosts=load_balance_hosts,
        channel_binding=channel_binding,
    )
    config = _client_configuration(
        command_timeout,
        statement_cache_size,
        max_cached_statement_lifetime,
        max_cacheable_statement_size,
    )
    return addrs, params, config
