"""Limits the protocol imposes: too many query arguments is refused as asyncpg refuses it,
and the connection stays usable."""

import pytest

from asyncpg_rs import exceptions


def _query_with(n):
    # one placeholder per argument, each typed so the server need not guess; an array
    # rather than columns (a select list holds at most 1664 entries)
    return "SELECT cardinality(ARRAY[" + ", ".join(f"${i}::int4" for i in range(1, n + 1)) + "])"


@pytest.mark.parametrize("n", [32768, 65535, 70000])
async def test_too_many_query_arguments_is_an_interface_error(con, n):
    with pytest.raises(
        exceptions.InterfaceError, match="the number of query arguments cannot exceed 32767"
    ):
        await con.fetchval(_query_with(n), *range(n))
    # nothing was left half-sent: the connection goes on
    assert await con.fetchval("SELECT $1::int4 + 1", 41) == 42
    assert not con.is_in_transaction()


async def test_too_many_arguments_in_a_transaction_leaves_it_usable(con):
    async with con.transaction():
        with pytest.raises(exceptions.InterfaceError, match="cannot exceed 32767"):
            await con.execute(_query_with(40000), *range(40000))
        assert await con.fetchval("SELECT 1") == 1


async def test_the_most_query_arguments_allowed_work(con):
    n = 32767
    assert await con.fetchval(_query_with(n), *range(n)) == n
    last = ", ".join(f"${i}::int4" for i in range(1, n + 1))
    assert await con.fetchval(f"SELECT (ARRAY[{last}])[{n}]", *range(n)) == n - 1
