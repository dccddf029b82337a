"""Establishing connections: TLS negotiation, startup, multiple hosts and
``target_session_attrs``, and the CancelRequest side connection.

What to connect to, and how, comes from :mod:`asyncpg_rs._connect_params`; the names asyncpg's
``connect_utils`` has for it (``SSLMode``, ``_ConnectionParameters``,
``_ClientConfiguration``, ``_parse_connect_dsn_and_args``, ``_parse_connect_arguments``, ...)
are re-exported here, since libraries and tests import them from this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
import time

from . import _channel_binding, _pooler, exceptions
from . import protocol as _protocol_layer

# re-exported (`x as x`): asyncpg's connect_utils has these names
from ._connect_params import ClientConfiguration as ClientConfiguration
from ._connect_params import ConnectionParameters as ConnectionParameters
from ._connect_params import SessionAttribute as SessionAttribute
from ._connect_params import SSLMode as SSLMode
from ._connect_params import SSLNegotiation as SSLNegotiation
from ._connect_params import _dot_postgresql_path as _dot_postgresql_path
from ._connect_params import _parse_connect_arguments as _parse_connect_arguments
from ._connect_params import _parse_connect_dsn_and_args as _parse_connect_dsn_and_args

__all__ = ("ConnectionParameters", "ClientConfiguration", "SSLMode")

# asyncpg's names for the parameter tuples
_ConnectionParameters = ConnectionParameters
_ClientConfiguration = ClientConfiguration

# Magic request codes in the length+code header of PostgreSQL's pre-startup messages.
_SSL_REQUEST_CODE = 80877103
_CANCEL_REQUEST_CODE = 80877102


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
    # a resolved address carries its host's name as a third item
    server_hostname = (addr[2] if len(addr) > 2 else addr[0]) if isinstance(addr, tuple) else None
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
        transport = proto = None
        try:
            transport = await _open_transport(loop, addr, params, use_ssl)
            ssl_object = transport.get_extra_info("ssl_object")
            tls = ssl_object is not None
            # looked up on the module at each connect, as asyncpg does: New Relic wraps it
            proto = _protocol_layer.Protocol(
                addr,
                None,
                params,
                record_class,
                loop,
                tls_server_end_point=(
                    _channel_binding.tls_server_end_point(ssl_object.getpeercert(True))
                    if tls and params.channel_binding != "disable"
                    else None
                ),
            )
            # the protocol reads the socket from the startup on (on our loop, natively)
            transport.set_protocol(proto)
            proto.connection_made(transport)
            await proto.startup_waiter()
        except (
            exceptions.InternalClientError,
            exceptions.CannotConnectNowError,
            _SSLExchangeError,
        ) as e:
            _abort(transport)
            if _authenticated(proto):
                e._asyncpg_rs_after_auth = True
            # CannotConnectNow (starting up, shutting down): this host, not this transport
            raise e from first_exc
        except (exceptions.PostgresError, exceptions.InterfaceError, OSError) as e:
            _abort(transport)
            if _authenticated(proto):
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
        # a resolved address keeps its host's name as a third item; the connection's address
        # is where it went (a cancel request must reach the same server)
        con = connection_class(
            proto, transport, loop, addr[:2] if isinstance(addr, tuple) else addr, config, params
        )
        con._session.record_class = record_class
        if config.statement_cache_size > 0:
            try:
                con._session.pooled = await _pooler.behind_pooler(proto)
            except BaseException:
                con.terminate()
                raise
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


def _authenticated(proto):
    """Whether the server accepted the login (AuthenticationOk) on ``proto``: a failure after
    it is not worth a retry over the other transport or of this host."""
    return proto is not None and bool(proto.authenticated)


def _abort(transport):
    if transport is not None:
        transport.abort()


async def _can_use_connection(connection, attr):
    """Whether ``connection`` satisfies ``target_session_attrs`` = ``attr``."""
    attr = getattr(attr, "value", attr)
    if attr == "any":
        return True
    if attr in ("primary", "standby", "prefer-standby"):
        hot = connection._session.protocol.get_settings().get("in_hot_standby")
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
    if params.load_balance_hosts == "random":
        addrs = await _shuffled_addresses(loop, addrs)
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
    host, port = addr[0], addr[1]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # a resolved address of a named host (load_balance_hosts=random) names both
    return f"{addr[2]} ({shown})" if len(addr) > 2 else shown


async def _shuffled_addresses(loop, addrs):
    """libpq 16's load_balance_hosts=random: the hosts in random order, and each named host
    resolved here so that its addresses are tried in random order too (the name is kept for
    TLS verification and messages)."""
    hosts = list(addrs)
    random.shuffle(hosts)
    out = []
    for addr in hosts:
        if isinstance(addr, str) or _is_ip_literal(addr[0]):
            out.append(addr)
            continue
        try:
            infos = await loop.getaddrinfo(
                addr[0], addr[1], type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError:
            out.append(addr)  # the connect attempt reports the resolution failure
            continue
        resolved = list(dict.fromkeys(info[4][0] for info in infos))
        random.shuffle(resolved)
        out.extend((ip, addr[1], addr[0]) for ip in resolved)
    return out


def _is_ip_literal(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
