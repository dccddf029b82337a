"""Working through a connection pooler (PgBouncer, and the like) with the default settings.

A transaction-mode pooler hands each transaction (each Sync, outside an explicit transaction)
to whichever server connection is free, so a statement prepared by name in one round trip is
missing, or is another client's, in the next: asyncpg's most reported failure ("prepared
statement ... does not exist"), which its users avoid only by turning the statement cache off.

What we do instead:

- **Recognise the pooler at connect.** A pooler answers the startup with a cancel key of its
  own, so the process id in BackendKeyData is not the backend's ``pg_backend_pid()``. One query
  at connect compares them; a connection that differs ("pooled") never prepares by name. Its
  statement cache still keeps every statement's description (parameter and column types,
  codecs) and sends the unnamed statement's Parse in the same batch as Bind and Execute: one
  round trip per query, as on a direct connection, where asyncpg with
  ``statement_cache_size=0`` takes two.
- **A safety net.** A server that reports one of our named statements missing (SQLSTATE
  26000) or a name taken (42P05) means a pooler the probe did not see: the connection turns
  pooled, and the query, which provably did not run (the error came at Parse or Bind), is
  retried once outside a transaction. Inside one, the transaction is already aborted, so the
  error is raised with a note.
- **Names that cannot collide.** Statement names carry a per-connection random part, so a
  pooler that moves a statement to another client's server makes it missing, never another
  client's statement of the same name.

A pooler in session mode keeps one server connection per client, where named statements
would work; it cannot be told from transaction mode by what it sends, so it gets the unnamed
path too (the server then parses each query again, which costs it a little CPU, and no round
trip). What a transaction pooler cannot give at all (LISTEN, session settings, advisory locks
held across transactions) raises no error here: a ``RuntimeWarning`` says so on LISTEN.
"""

from __future__ import annotations

import secrets

from . import _native

# SQLSTATEs a pooler causes for a named statement: missing, or the name already taken
LOST_STATEMENT = frozenset({"26000", "42P05"})

POOLED_LISTEN_WARNING = (
    "this connection goes through a connection pooler (its BackendKeyData process id is not "
    "the backend's): LISTEN only receives notifications in the pooler's session mode"
)


def statement_name_prefix() -> str:
    """A random part for a connection's statement names (fork-safe: made per connection)."""
    return secrets.token_hex(4)


async def behind_pooler(protocol) -> bool:
    """Whether the server we reached is a pooler's front: its BackendKeyData process id is
    not the backend's. Runs one unnamed query, which works in any pooling mode, through the
    native methods: an APM agent that wraps the protocol's must not see it."""
    # an agent may also have wrapped the whole object (New Relic proxies the constructor's
    # result): the native object is behind its __wrapped__
    while hasattr(protocol, "__wrapped__"):
        protocol = protocol.__wrapped__
    state = await _native.PGProtocol.prepare(protocol, "", "SELECT pg_catalog.pg_backend_pid()")
    rows = await _native.PGProtocol.bind_execute(protocol, state, (), "", 0, None, True)
    return rows[0][0] != protocol.get_server_pid()


def lost_statement(exc: BaseException, state) -> bool:
    """Whether ``exc`` says that the named statement ``state`` is not where we prepared it."""
    return getattr(exc, "sqlstate", None) in LOST_STATEMENT and bool(state.name)
