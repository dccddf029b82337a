"""Connection parameters (DSN, keywords, environment, .pgpass) and establishing connections.

Semantics follow asyncpg (and libpq where asyncpg follows libpq): multiple hosts tried in
order, unix-socket directories, ``sslmode`` with libpq's meaning, ``target_session_attrs``.
Everything that can be wrong with the arguments is reported as
:class:`~asyncpg_rs.exceptions.ClientConfigurationError` before any network I/O.
"""

from __future__ import annotations

import asyncio
import configparser
import enum
import getpass
import os
import pathlib
import re
import ssl as ssl_module
import stat
import struct
import time
import typing
import urllib.parse
import warnings

from . import exceptions
from . import protocol as _protocol_layer

__all__ = ("ConnectionParameters", "ClientConfiguration", "SSLMode")


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


class ClientConfiguration(typing.NamedTuple):
    """Client-side behaviour of a connection."""

    command_timeout: typing.Optional[float]
    statement_cache_size: int
    max_cached_statement_lifetime: float
    max_cacheable_statement_size: int


# Magic request codes in the length+code header of PostgreSQL's pre-startup messages.
_SSL_REQUEST_CODE = 80877103
_CANCEL_REQUEST_CODE = 80877102


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


def _parse_connect_arguments(
    *,
    dsn,
    host,
    port,
    user,
    password,
    passfile,
    database,
    ssl,
    direct_tls,
    server_settings,
    target_session_attrs,
    krbsrvname,
    gsslib,
    command_timeout,
    statement_cache_size,
    max_cached_statement_lifetime,
    max_cacheable_statement_size,
    service=None,
    servicefile=None,
):
    """Turn connect()'s arguments into (addresses, ConnectionParameters, ClientConfiguration)."""
    env = os.environ
    dsn_params = {}
    extra = {}
    if dsn:
        parsed, extra = _parse_dsn(dsn)
        dsn_params.update(parsed)

    q_service = extra.pop("service", None)
    if service is None:
        service = q_service or env.get("PGSERVICE")
    svc = _read_service(service, servicefile) if service else {}
    # libpq lets a service carry session settings too; the DSN's own ones win
    for key in ("application_name", "options"):
        if key in svc and key not in extra:
            extra[key] = svc[key]

    def take(name, *aliases):
        # the DSN's query string first, then the service definition
        for key in (name,) + aliases:
            if key in extra:
                return extra.pop(key)
        for key in (name,) + aliases:
            if key in svc:
                return svc[key]
        return None

    q_host = take("host")
    q_port = take("port")
    q_user = take("user")
    q_password = take("password")
    q_passfile = take("passfile")
    q_database = take("dbname", "database")
    q_sslmode = take("sslmode")
    q_sslrootcert = take("sslrootcert")
    q_sslcert = take("sslcert")
    q_sslkey = take("sslkey")
    q_sslcrl = take("sslcrl")
    q_sslpassword = take("sslpassword")
    q_sslneg = take("sslnegotiation")
    q_minver = take("ssl_min_protocol_version")
    q_maxver = take("ssl_max_protocol_version")
    q_tsa = take("target_session_attrs")
    q_krb = take("krbsrvname")
    q_gss = take("gsslib")
    q_connect_timeout = take("connect_timeout")

    # host / port: keyword > DSN > query > environment > defaults
    if host is None:
        host = dsn_params.get("host")
    elif port is None and "port" in dsn_params:
        # the DSN's ports belong to the DSN's hosts, which the keyword replaced
        port = None
        dsn_params.pop("port")
    if host is None and q_host is not None:
        host = _split_hostspec(q_host)[0] if not q_host.startswith("/") else q_host.split(",")
    if host is None and env.get("PGHOST"):
        host = env["PGHOST"].split(",")
    if port is None:
        port = dsn_params.get("port")
    if port is None and q_port is not None:
        port = q_port.split(",")
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

    if port is None:
        ports = [_DEFAULT_PORT] * len(host)
    else:
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
            ports = parsed_ports * len(host)
        elif len(parsed_ports) != len(host):
            raise _bad(f"could not match {len(parsed_ports)} port numbers to {len(host)} hosts")
        else:
            ports = parsed_ports

    if user is None:
        user = dsn_params.get("user") or q_user or env.get("PGUSER")
    if user is None:
        try:
            user = getpass.getuser()
        except Exception as e:  # noqa: BLE001 - no login name in this environment
            raise _bad("could not determine the user name; pass user=") from e
    if password is None:
        password = dsn_params.get("password") or q_password or env.get("PGPASSWORD")
    if database is None:
        database = dsn_params.get("database") or q_database or env.get("PGDATABASE") or user

    if passfile is None:
        passfile = q_passfile or env.get("PGPASSFILE")
    if passfile is None:
        try:
            passfile = str(pathlib.Path.home() / ".pgpass")
        except (RuntimeError, KeyError):
            passfile = None

    addrs = []
    for h, p in zip(host, ports):
        if h.startswith("/"):
            addrs.append(os.path.join(h, f".s.PGSQL.{p}"))
        else:
            addrs.append((h, p))

    # password from .pgpass: the first address with a matching entry supplies it
    if password is None and passfile:
        entries = _read_passfile(passfile)
        if entries:
            for h, p in zip(host, ports):
                found = _password_from_passfile(entries, h, p, database, user)
                if found is not None:
                    password = found
                    break

    # target_session_attrs
    if target_session_attrs is None:
        target_session_attrs = q_tsa or env.get("PGTARGETSESSIONATTRS") or "any"
    if target_session_attrs not in _TARGET_ATTRS:
        raise _bad(
            f"target_session_attrs is expected to be one of {', '.join(map(repr, _TARGET_ATTRS))}"
            f", got {target_session_attrs!r}"
        )
    target_session_attrs = SessionAttribute(target_session_attrs).value

    # SSL
    sslneg = q_sslneg or env.get("PGSSLNEGOTIATION")
    if direct_tls is None:
        direct_tls = sslneg == "direct" if sslneg else False
    elif sslneg not in (None, "postgres", "direct"):
        raise _bad(f"sslnegotiation must be 'postgres' or 'direct', got {sslneg!r}")
    sslrootcert = q_sslrootcert or env.get("PGSSLROOTCERT")
    sslcert = q_sslcert or env.get("PGSSLCERT")
    sslkey = q_sslkey or env.get("PGSSLKEY")
    sslcrl = q_sslcrl or env.get("PGSSLCRL")
    sslpassword = q_sslpassword
    if ssl is None:
        ssl = q_sslmode or env.get("PGSSLMODE")
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
                sslmode, sslrootcert, sslcert, sslkey, sslcrl, sslpassword, q_minver, q_maxver
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

    if krbsrvname is None:
        krbsrvname = q_krb or env.get("PGKRBSRVNAME")
    if gsslib is None:
        gsslib = q_gss or env.get("PGGSSLIB")

    connect_timeout = q_connect_timeout or env.get("PGCONNECT_TIMEOUT")
    if connect_timeout is not None:
        # libpq: per-host seconds; zero or less waits forever, and under 2 means 2
        try:
            connect_timeout = float(connect_timeout)
        except ValueError:
            raise _bad(
                f"invalid connect_timeout {connect_timeout!r}: expected a number of seconds"
            ) from None
        connect_timeout = None if connect_timeout <= 0 else max(connect_timeout, 2.0)

    settings = {}
    if extra:
        settings.update(extra)
    if "application_name" not in settings and env.get("PGAPPNAME"):
        settings["application_name"] = env["PGAPPNAME"]
    if server_settings:
        if not isinstance(server_settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in server_settings.items()
        ):
            raise _bad("server_settings is expected to be None or a Dict[str, str]")
        settings.update(server_settings)

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

    params = ConnectionParameters(
        user=user,
        password=password,
        database=database,
        ssl=ssl_ctx,
        sslmode=sslmode,
        direct_tls=bool(direct_tls),
        server_settings=settings or None,
        target_session_attrs=target_session_attrs,
        krbsrvname=krbsrvname,
        gsslib=gsslib,
        connect_timeout=connect_timeout,
    )
    config = ClientConfiguration(
        command_timeout=command_timeout,
        statement_cache_size=statement_cache_size,
        max_cached_statement_lifetime=max_cached_statement_lifetime,
        max_cacheable_statement_size=max_cacheable_statement_size,
    )
    return addrs, params, config


# ------------------------------------------------------------------ connecting


class _SSLExchangeError(ConnectionError):
    """The server's answer to SSLRequest was not a clean 'S' or 'N'. Retrying the other
    transport on the same server would only repeat it, so this ends the host's attempts."""


class _SSLNegotiation(asyncio.Protocol):
    """Sends SSLRequest and waits for the server's one-byte answer."""

    def __init__(self, loop, where):
        self.answer = loop.create_future()
        self.transport = None
        self.where = where

    def connection_made(self, transport):
        self.transport = transport
        transport.write(struct.pack("!ii", 8, _SSL_REQUEST_CODE))

    def data_received(self, data):
        if self.answer.done():
            return
        if data[:1] == b"E":
            # An unauthenticated ErrorResponse: its text must not be trusted or waited for.
            self.answer.set_exception(
                _SSLExchangeError(
                    f'PostgreSQL server at "{self.where}": server sent an error response during '
                    "SSL exchange; check the server logs for details"
                )
            )
        elif data[:1] not in (b"S", b"N"):
            self.answer.set_exception(
                _SSLExchangeError(
                    f'PostgreSQL server at "{self.where}": unexpected answer {data[:1]!r} to the '
                    "SSL request"
                )
            )
        elif len(data) > 1:
            # bytes after the answer would be plaintext injected ahead of the TLS handshake
            self.answer.set_exception(
                _SSLExchangeError(
                    f'PostgreSQL server at "{self.where}": unexpected data after the answer to '
                    "the SSL request"
                )
            )
        else:
            self.answer.set_result(data)

    def connection_lost(self, exc):
        if not self.answer.done():
            self.answer.set_exception(
                ConnectionError("the server closed the connection during SSL negotiation")
                if exc is None
                else exc
            )


async def _open_transport(loop, addr, params, use_ssl):
    """A transport to ``addr`` (TLS when ``use_ssl``) and the address's TLS server name."""
    server_hostname = addr[0] if isinstance(addr, tuple) else None
    if isinstance(addr, str):
        tr, pr = await loop.create_unix_connection(
            (lambda: _SSLNegotiation(loop, _addr_str(addr))) if use_ssl else asyncio.Protocol, addr
        )
    elif use_ssl and params.direct_tls:
        tr, pr = await loop.create_connection(
            asyncio.Protocol,
            addr[0],
            addr[1],
            ssl=params.ssl,
            server_hostname=server_hostname if params.ssl.check_hostname else "",
        )
        return tr
    elif use_ssl:
        tr, pr = await loop.create_connection(
            lambda: _SSLNegotiation(loop, _addr_str(addr)), addr[0], addr[1]
        )
    else:
        tr, pr = await loop.create_connection(asyncio.Protocol, addr[0], addr[1])
        return tr
    if not use_ssl:
        return tr
    try:
        answer = await pr.answer
    except BaseException:
        tr.close()
        raise
    if answer == b"S":
        try:
            return await loop.start_tls(
                tr,
                pr,
                params.ssl,
                server_hostname=server_hostname if params.ssl.check_hostname else None,
            )
        except BaseException:
            tr.close()
            raise
    if params.sslmode >= SSLMode.require:
        tr.close()
        raise ConnectionError(f"PostgreSQL server at {_addr_str(addr)!r} rejected SSL upgrade")
    return tr  # 'N' under prefer/allow: go on in plaintext on the same connection


async def _resolve_password(password):
    if callable(password):
        password = password()
        if asyncio.iscoroutine(password) or isinstance(password, asyncio.Future):
            password = await password
    return password


# Errors after which trying the other transport (prefer/allow) or the next host is pointless:
# the client itself failed, or the same credentials would be refused again.
_TERMINAL = (exceptions.InternalClientError, exceptions.InvalidPasswordError)


async def _connect_addr(*, addr, loop, params, config, connection_class, record_class):
    """One address: TLS first or second as the sslmode says, the first failure chained as the
    ``__cause__`` of the last."""
    if callable(params.password):
        params = params._replace(password=await _resolve_password(params.password))
    mode = params.sslmode
    if mode == SSLMode.disable or params.ssl is None:
        attempts = [False]
    elif mode == SSLMode.allow:
        attempts = [False, True]
    elif mode == SSLMode.prefer:
        attempts = [True, False]
    else:
        attempts = [True]
    if isinstance(addr, str) and mode <= SSLMode.prefer:
        attempts = [False]  # unix sockets: TLS only when demanded
    first_exc = None
    for i, use_ssl in enumerate(attempts):
        transport = watcher = None
        try:
            transport = await _open_transport(loop, addr, params, use_ssl)
            tls = transport.get_extra_info("ssl_object") is not None
            # looked up on the module at each connect, as asyncpg does: New Relic wraps it
            proto = _protocol_layer.Protocol(addr, None, params, record_class, loop)
            watcher = _StartupWatcher(proto)
            transport.set_protocol(watcher)
            proto.connection_made(transport)
            try:
                await proto.startup_waiter()
            finally:
                # from here on the native protocol reads the socket with nothing in between
                if not transport.is_closing():
                    transport.set_protocol(proto)
        except (
            exceptions.InternalClientError,
            exceptions.CannotConnectNowError,
            _SSLExchangeError,
        ) as e:
            _abort(transport)
            if watcher is not None and watcher.authenticated:
                e._asyncpg_rs_after_auth = True
            # CannotConnectNow (starting up, shutting down): this host, not this transport
            raise e from first_exc
        except (exceptions.PostgresError, exceptions.InterfaceError, OSError) as e:
            _abort(transport)
            if watcher is not None and watcher.authenticated:
                # The server accepted us and then failed (a bad startup setting, say): the
                # same would happen over the other transport, and on a retry of this host.
                e._asyncpg_rs_after_auth = True
                raise e from first_exc
            # A declined SSLRequest under prefer already was the plaintext attempt.
            plain_done = use_ssl and transport is not None and not tls
            if i + 1 == len(attempts) or plain_done:
                if e is first_exc or first_exc is None:
                    raise
                if _hides_password_error(first_exc, e):
                    raise first_exc from None
                raise e from first_exc
            first_exc = e
            continue
        except BaseException as e:
            _abort(transport)
            if first_exc is not None and e.__cause__ is None:
                # cancelled or timed out during the fallback: keep the first failure visible
                raise e from first_exc
            raise
        con = connection_class(proto, transport, loop, addr, config, params)
        con._record_class = record_class
        return con
    raise AssertionError("unreachable")  # pragma: no cover - attempts is never empty


def _hides_password_error(first, fallback):
    """Whether the fallback transport's failure only hides a wrong password found on the
    first one (pg_hba.conf has no line for the fallback, or it hung up): then the password
    error is what the user must see. A wrong password is retried over the other transport,
    as libpq does, since pg_hba.conf may authenticate it differently."""
    return (
        isinstance(first, exceptions.InvalidPasswordError)
        and not isinstance(fallback, exceptions.InvalidPasswordError)
        and isinstance(
            fallback,
            (
                exceptions.InvalidAuthorizationSpecificationError,
                exceptions.ConnectionDoesNotExistError,
            ),
        )
    )


class _StartupWatcher(asyncio.Protocol):
    """Sits between the transport and the native protocol until the first ReadyForQuery,
    noting whether AuthenticationOk arrived: failures after it are not worth a retry."""

    __slots__ = ("proto", "authenticated", "_buf", "_skip")

    def __init__(self, proto):
        self.proto = proto
        self.authenticated = False
        self._buf = b""  # an incomplete message header
        self._skip = 0  # bytes of a long message body still to come

    def data_received(self, data):
        if not self.authenticated:
            self._scan(data)
        self.proto.data_received(data)

    def _scan(self, data):
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf + data if self._buf else data
        pos = 0
        # Backend messages: a type byte, an int32 length (counting itself), the body.
        while len(buf) - pos >= 5:
            length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if buf[pos] == 0x52 and length == 8:  # 'R' with a 4-byte auth code
                if len(buf) - pos < 9:
                    break
                if buf[pos + 5 : pos + 9] == b"\0\0\0\0":
                    self.authenticated = True
                    self._buf = b""
                    return
            if length < 4:
                # not a message stream; the native protocol reports it, we stop looking
                self._buf, self._skip = b"", 1 << 62
                return
            end = pos + 1 + length
            if end > len(buf):
                self._buf, self._skip = b"", end - len(buf)
                return
            pos = end
        self._buf = buf[pos:]

    def eof_received(self):
        return self.proto.eof_received()

    def connection_lost(self, exc):
        self.proto.connection_lost(exc)

    def pause_writing(self):
        self.proto.pause_writing()

    def resume_writing(self):
        self.proto.resume_writing()


def _abort(transport):
    if transport is not None:
        transport.abort()


async def _can_use_connection(connection, attr):
    """Whether ``connection`` satisfies ``target_session_attrs`` = ``attr``."""
    attr = getattr(attr, "value", attr)
    if attr == "any":
        return True
    if attr in ("primary", "standby", "prefer-standby"):
        hot = connection._protocol.get_settings().get("in_hot_standby")
        if hot is None:
            # before PostgreSQL 14 the server does not report in_hot_standby
            standby = await connection.fetchval("SELECT pg_catalog.pg_is_in_recovery()")
        else:
            standby = hot == "on"
        return standby if attr in ("standby", "prefer-standby") else not standby
    ro = await connection.fetchval("SHOW transaction_read_only")
    return (ro == "on") if attr == "read-only" else (ro == "off")


async def _connect(*, loop, connection_class, record_class, timeout=60, **kwargs):
    """Connect to the first usable address; the whole attempt is bounded by ``timeout``."""
    addrs, params, config = _parse_connect_arguments(**kwargs)
    deadline = None if timeout is None else time.monotonic() + timeout
    if callable(params.password):
        # once for all hosts: a password callable may be slow or rate-limited
        params = params._replace(password=await _resolve_password(params.password))
    attrs = params.target_session_attrs
    candidate = None  # prefer-standby: a primary kept in case no standby turns up
    last_exc = None
    reasons = []  # why each address was passed over, for the final error
    try:
        for addr in addrs:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise asyncio.TimeoutError
            per_host = params.connect_timeout
            per_host_bounded = per_host is not None and (remaining is None or per_host < remaining)
            if per_host_bounded:
                remaining = per_host
            try:
                # asyncio.timeout runs in this task, so a cancellation's cause survives
                async with _timeout(remaining):
                    con = await _connect_addr(
                        addr=addr,
                        loop=loop,
                        params=params,
                        config=config,
                        connection_class=connection_class,
                        record_class=record_class,
                    )
            except asyncio.TimeoutError as e:
                if not per_host_bounded:
                    raise
                last_exc = e
                reasons.append(
                    f"{_addr_str(addr)}: timed out after {per_host:g}s (connect_timeout)"
                )
                continue
            except _TERMINAL:
                raise
            except (OSError, exceptions.PostgresError, exceptions.InterfaceError) as e:
                if getattr(e, "_asyncpg_rs_after_auth", False):
                    raise  # authenticated and then refused: other hosts would not help

                last_exc = e
                reasons.append(f"{_addr_str(addr)}: {type(e).__name__}: {e}")
                continue
            try:
                usable = await _can_use_connection(
                    con, "standby" if attrs == "prefer-standby" else attrs
                )
            except BaseException:
                con.terminate()
                raise
            if usable:
                return con
            if attrs == "prefer-standby" and candidate is None:
                candidate = con
                con = None
            else:
                # terminate, not close: a rejected host must not hold up the next one
                con.terminate()
            reasons.append(f"{_addr_str(addr)}: does not match target_session_attrs={attrs}")
            last_exc = exceptions.TargetServerAttributeNotMatched(
                "None of the hosts match the target attribute requirement "
                f"{SessionAttribute(attrs)!r}"
            )
        if candidate is not None:
            con, candidate = candidate, None
            return con
    finally:
        if candidate is not None:
            candidate.terminate()
    if last_exc is None:
        raise exceptions.ClientConfigurationError("no addresses to connect to")
    if len(reasons) > 1:
        # keep asyncpg's exception (and its class) but say what happened at every host
        last_exc.add_note("tried, in order:\n  " + "\n  ".join(reasons))
    raise last_exc


class _TimeoutPre311:
    """``asyncio.timeout`` for Python < 3.11: cancel this task at the deadline and turn
    that cancellation into TimeoutError."""

    def __init__(self, delay):
        self._delay = delay
        self._handle = None
        self._fired = False

    async def __aenter__(self):
        if self._delay is not None:
            task = asyncio.current_task()
            self._handle = asyncio.get_running_loop().call_later(
                max(self._delay, 0), self._fire, task
            )
        return self

    def _fire(self, task):
        self._fired = True
        task.cancel()

    async def __aexit__(self, exc_type, exc, tb):
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError:
            raise asyncio.TimeoutError from exc
        return False


_timeout = getattr(asyncio, "timeout", _TimeoutPre311)


def _addr_str(addr):
    if isinstance(addr, str):
        return addr
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _CancelProtocol(asyncio.Protocol):
    def __init__(self, loop, msg):
        self.done = loop.create_future()
        self.msg = msg

    def connection_made(self, transport):
        transport.write(self.msg)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def _cancel(*, loop, addr, params, backend_pid, backend_secret, timeout=10):
    """Ask the server to cancel the backend's current query (a CancelRequest on a new
    connection). The server answers by closing the connection; we never wait longer than
    ``timeout``."""
    msg = struct.pack("!iiii", 16, _CANCEL_REQUEST_CODE, backend_pid, backend_secret)

    async def send():
        # The cancel connection is secured like the session's: a server with a hostssl-only
        # rule would otherwise reject the CancelRequest.
        use_ssl = params.ssl is not None and params.sslmode >= SSLMode.prefer
        if isinstance(addr, str) and params.sslmode <= SSLMode.prefer:
            use_ssl = False
        tr = await _open_transport(loop, addr, params, use_ssl)
        pr = _CancelProtocol(loop, msg)
        tr.set_protocol(pr)
        pr.connection_made(tr)
        try:
            await pr.done
        finally:
            tr.close()

    await asyncio.wait_for(send(), timeout)
