"""libpq's ``key=value`` connection strings (``"host=a,b port=5432 dbname=x sslmode=require"``).

A string that does not start with a URI scheme is read as libpq reads a conninfo string:
``keyword = value`` pairs separated by white space, a value single-quoted when it is empty or
holds white space, and a backslash taking the next character literally (``\\'``, ``\\\\``),
inside quotes or out. Keywords are libpq's; one libpq does not know is an error, as it is there
(a URI's unknown query parameters, by asyncpg's rule, become server settings instead).

The result has the shape of a URI's query parameters, so both forms go through one path.
"""

from __future__ import annotations

from .exceptions import ClientConfigurationError

# Every keyword libpq 17 accepts in a conninfo string.
LIBPQ_KEYWORDS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "requiressl",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    }
)

# Keywords that tune the socket or the TLS session in ways that change no result; libpq
# honours them and we accept them without effect rather than refuse a working string.
NO_EFFECT_KEYWORDS = frozenset(
    {
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "tcp_user_timeout",
        "sslcompression",
        "sslsni",
    }
)

# Keywords whose meaning we do not implement; ignoring them could connect somewhere else or
# with weaker guarantees than asked, so they are refused by name.
UNSUPPORTED_KEYWORDS = frozenset(
    {
        "hostaddr",
        "replication",
        "require_auth",
        "requirepeer",
        "sslcertmode",
        "sslcrldir",
        "gssdelegation",
    }
)


def looks_like_conninfo(dsn: str) -> bool:
    """Whether ``dsn`` is a ``key=value`` string rather than a URI (libpq's own test)."""
    return not (dsn.startswith("postgresql://") or dsn.startswith("postgres://")) and "=" in dsn


def _bad(message: str) -> ClientConfigurationError:
    return ClientConfigurationError(f"invalid connection string: {message}")


def parse_conninfo(dsn: str) -> dict[str, str]:
    """The keywords of a conninfo string, later ones replacing earlier ones as in libpq.

    Raises ``ClientConfigurationError`` naming the culprit for a keyword without ``=``, an
    unterminated quoted value, or a keyword libpq does not know. A password's value never
    appears in a message.
    """
    params: dict[str, str] = {}
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        keyword = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            raise _bad(f'missing "=" after "{keyword}"')
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value, i = _read_value(dsn, i, keyword)
        if keyword not in LIBPQ_KEYWORDS:
            raise _bad(f'invalid connection option "{keyword}"')
        if keyword in UNSUPPORTED_KEYWORDS:
            raise ClientConfigurationError(
                f'connection option "{keyword}" is not supported by asyncpg_rs'
            )
        params[keyword] = value


def _read_value(dsn: str, i: int, keyword: str) -> tuple[str, int]:
    out: list[str] = []
    n = len(dsn)
    if i < n and dsn[i] == "'":
        i += 1
        while True:
            if i >= n:
                raise _bad(f'unterminated quoted string in the value of "{keyword}"')
            ch = dsn[i]
            if ch == "\\" and i + 1 < n:
                out.append(dsn[i + 1])
                i += 2
            elif ch == "'":
                return "".join(out), i + 1
            else:
                out.append(ch)
                i += 1
    while i < n and not dsn[i].isspace():
        ch = dsn[i]
        if ch == "\\" and i + 1 < n:
            out.append(dsn[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out), i
