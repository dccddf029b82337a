"""asyncpg's ``asyncpg.protocol.protocol`` names that code outside the driver uses.

:class:`Protocol` is the connection's protocol object, a Python class as in asyncpg, so that
APM agents can instrument it the way they instrument asyncpg: Datadog and Elastic APM wrap
its methods (``bind_execute``, ``bind_execute_many``, ``bind``, ``execute``, ``query``,
``copy_in``, ``copy_out``), New Relic wraps its constructor (``asyncpg.protocol.Protocol``,
looked up by ``connect_utils`` at each connect) and ``prepare``. Each of those names is the
one the driver really calls for that step, with the statement state (``state.query``) or
the SQL text first, as in asyncpg; the work itself is done by the native ``PGProtocol``.
"""

from .._native import PGProtocol, Record, create_record


class Protocol(PGProtocol):
    """The PostgreSQL protocol of one connection (asyncpg's constructor arguments)."""

    def __new__(
        cls, addr, connected_fut, con_params, record_class, loop, *, tls_server_end_point=None
    ):
        # addr, connected_fut and record_class are asyncpg's; New Relic reads the address
        # and database from the constructor's arguments. tls_server_end_point (ours) is the
        # TLS session's SCRAM channel binding data, which only the connecting code can see.
        return super().__new__(
            cls,
            loop,
            con_params.user,
            con_params.database,
            con_params.password,
            con_params.server_settings or {},
            channel_binding=getattr(con_params, "channel_binding", "prefer"),
            tls_server_end_point=tls_server_end_point,
        )

    # asyncpg's names for the native steps (bind_execute and prepare share them already)
    query = PGProtocol.simple_query  # (sql) -> status: a simple-protocol query
    bind = PGProtocol.bind_portal  # (state, args, portal): open a cursor's portal
    execute = PGProtocol.execute_portal  # (state, portal, limit, record_class): fetch from it

    async def bind_execute_many(self, state, args, connection, timeout, record_class, want_rows):
        """Run ``state`` for every argument sequence in ``args`` (one pipelined batch)."""
        return await connection._session.stream_executemany(
            self, state, args, timeout, record_class, want_rows
        )


# as defined here: an agent that wraps it on the class replaces the attribute (the pool's
# unawaited reset checks for that, asyncpg_rs/_session.py)
UNWRAPPED_QUERY = Protocol.query


def _create_record(mapping, elems):
    """A Record from a ``{name: index}`` mapping and a tuple of values."""
    return create_record(mapping, tuple(elems))


__all__ = ("Protocol", "Record", "_create_record")
