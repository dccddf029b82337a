"""COPY in both directions."""

import asyncio
import datetime
import decimal
import io
import uuid

import pytest

from asyncpg_rs import exceptions


@pytest.fixture
def table_sql():
    return (
        "CREATE TEMP TABLE cp (a int4, b text, c float8, d numeric, e timestamptz, "
        "f uuid, g bytea, h int4[], i bool, j date)"
    )


async def test_copy_out_to_file_object_path_and_coroutine(con, tmp_path):
    await con.execute(
        "CREATE TEMP TABLE co AS SELECT g AS a, 'v' || g AS b FROM generate_series(1, 1000) g"
    )
    buf = io.BytesIO()
    assert await con.copy_from_table("co", output=buf) == "COPY 1000"
    lines = buf.getvalue().decode().splitlines()
    assert lines[0] == "1\tv1" and len(lines) == 1000
    path = tmp_path / "out.csv"
    status = await con.copy_from_query(
        "SELECT * FROM co WHERE a <= $1", 3, output=str(path), format="csv", header=True
    )
    assert status == "COPY 3"
    assert path.read_text().splitlines() == ["a,b", "1,v1", "2,v2", "3,v3"]
    got = []

    async def sink(chunk):
        got.append(chunk)

    assert await con.copy_from_table("co", output=sink, columns=["b"]) == "COPY 1000"
    assert b"".join(got).decode().splitlines()[-1] == "v1000"


async def test_copy_out_slow_consumer_and_sink_failure(con):
    seen = 0

    async def slow(chunk):
        nonlocal seen
        seen += len(chunk)
        await asyncio.sleep(0)

    status = await con.copy_from_query(
        "SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g", output=slow
    )
    assert status == "COPY 100000" and seen > 100000 * 100

    async def failing(chunk):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        await con.copy_from_query("SELECT generate_series(1, 1000000)", output=failing)
    assert await asyncio.wait_for(con.fetchval("SELECT 1"), 10) == 1


async def test_copy_in_from_sources(con, tmp_path):
    await con.execute("CREATE TEMP TABLE ci (a int4, b text)")
    data = "".join(f"{i}\tx{i}\n" for i in range(500)).encode()
    assert await con.copy_to_table("ci", source=io.BytesIO(data)) == "COPY 500"
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    assert await con.copy_to_table("ci", source=str(path)) == "COPY 500"

    async def gen():
        for i in range(10):
            yield f"{i}\ty\n".encode()

    assert await con.copy_to_table("ci", source=gen(), columns=["a", "b"]) == "COPY 10"
    assert await con.copy_to_table("ci", source=b"1,z\n", format="csv") == "COPY 1"
    assert await con.copy_to_table("ci", source=data, where="a < 5") == "COPY 5"
    assert await con.fetchval("SELECT count(*) FROM ci") == 1016


async def test_copy_in_source_failure_aborts(con):
    await con.execute("CREATE TEMP TABLE cf (a int4)")

    async def gen():
        yield b"1\n2\n"
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        await con.copy_to_table("cf", source=gen())
    assert await con.fetchval("SELECT count(*) FROM cf") == 0
    with pytest.raises(exceptions.InvalidTextRepresentationError):
        await con.copy_to_table("cf", source=b"1\nnot a number\n")
    assert await con.fetchval("SELECT count(*) FROM cf") == 0


async def test_copy_records_every_type_and_nulls(con, table_sql):
    await con.execute(table_sql)
    now = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
    u = uuid.uuid4()
    recs = [
        (
            1,
            "one",
            1.5,
            decimal.Decimal("1.25"),
            now,
            u,
            b"\x00\x01",
            [1, None, 3],
            True,
            datetime.date(2024, 1, 2),
        ),
        (None,) * 10,
    ]
    assert await con.copy_records_to_table("cp", records=recs) == "COPY 2"
    rows = await con.fetch("SELECT * FROM cp ORDER BY a NULLS LAST")
    assert tuple(rows[0]) == recs[0]
    assert tuple(rows[1]) == recs[1]


async def test_copy_records_many_rows_async_iterable_and_columns(con):
    await con.execute("CREATE TEMP TABLE cm (a int4, b text, c int8)")

    async def gen():
        for i in range(200000):
            yield (i, str(i))

    status = await con.copy_records_to_table("cm", records=gen(), columns=["a", "b"])
    assert status == "COPY 200000"
    assert await con.fetchval("SELECT sum(a::int8) FROM cm") == sum(range(200000))
    assert await con.fetchval("SELECT count(*) FROM cm WHERE c IS NULL") == 200000


async def test_copy_records_bad_record_commits_nothing(con):
    await con.execute("CREATE TEMP TABLE cb (a int4, b text)")
    recs = [(i, str(i)) for i in range(3000)]
    recs[2500] = (2500, 7)
    with pytest.raises(exceptions.DataError) as ei:
        await con.copy_records_to_table("cb", records=recs)
    assert "record #2500" in str(ei.value) and '"b"' in str(ei.value)
    with pytest.raises(exceptions.DataError, match="record #1 has 1 values"):
        await con.copy_records_to_table("cb", records=[(1, "a"), (2,)])
    assert await con.fetchval("SELECT count(*) FROM cb") == 0
    assert await con.fetchval("SELECT 1") == 1


async def test_copy_records_batches_sized_by_bytes_keep_order_and_indexes(con):
    # the first batch is small rows, so later batches are sized for them and then meet
    # rows a thousand times longer: every row arrives once, in order, and a bad record
    # far into a later batch is named by its index in the whole input
    await con.execute("CREATE TEMP TABLE cbs (a int4, b text)")
    recs = [(i, "s") for i in range(5000)] + [(i, "L" * 4000) for i in range(5000, 7000)]
    assert await con.copy_records_to_table("cbs", records=recs) == "COPY 7000"
    row = await con.fetchrow("SELECT count(*), sum(a::int8), sum(length(b)) FROM cbs")
    assert tuple(row) == (7000, sum(range(7000)), 5000 + 2000 * 4000)
    assert await con.fetchval("SELECT count(*) FROM cbs WHERE a < 5000 AND b <> 's'") == 0
    await con.execute("TRUNCATE cbs")
    bad = [(i, str(i)) for i in range(100_000)]
    bad[90_001] = ("x", "y")
    with pytest.raises(exceptions.DataError, match="record #90001"):
        await con.copy_records_to_table("cbs", records=iter(bad))
    assert await con.fetchval("SELECT count(*) FROM cbs") == 0


async def test_cancel_mid_copy_leaves_connection_usable(con):
    await con.execute("CREATE TEMP TABLE cc (a int4)")

    async def endless():
        i = 0
        while True:
            yield (i,)
            i += 1
            if i % 1000 == 0:
                await asyncio.sleep(0)

    task = asyncio.ensure_future(con.copy_records_to_table("cc", records=endless()))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(con.fetchval("SELECT count(*) FROM cc"), 10) == 0


async def test_copy_timeout_bounds_the_whole_operation(con):
    async def slow_writer(data):
        await asyncio.sleep(0.05)

    with pytest.raises(asyncio.TimeoutError):
        await con.copy_from_query(
            "SELECT repeat('a', 500) FROM generate_series(1, 200000)",
            output=slow_writer,
            timeout=0.1,
        )
    assert await asyncio.wait_for(con.fetchval("SELECT 1"), 10) == 1


async def test_copy_out_data_that_arrives_while_the_sink_is_busy_is_kept(con):
    # the sink is still busy with the first chunk when the rest and the end of the COPY
    # arrive: nothing of it may be lost
    got = []

    async def busy_first(chunk):
        got.append(chunk)
        if len(got) == 1:
            await asyncio.sleep(0.3)

    status = await con.copy_from_query(
        "SELECT g FROM generate_series(1, 50000) g", output=busy_first
    )
    assert status == "COPY 50000"
    assert b"".join(got).decode().splitlines() == [str(i) for i in range(1, 50001)]


async def test_copy_records_bad_values_name_record_and_column(con):
    await con.execute("CREATE TEMP TABLE cv (a int4, b timestamptz, c numeric, d int4[])")
    ts = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    good = (1, ts, decimal.Decimal("1.5"), [1, 2])
    cases = [
        ((1, ts, decimal.Decimal("1"), ["x"]), '"d"'),  # bad array element
        ((2**31, ts, decimal.Decimal("1"), None), '"a"'),  # int4 out of range
        ((1, "2024-01-01", None, None), '"b"'),  # str for timestamptz
        ((1, ts, "not a number", None), '"c"'),  # bad numeric
        ((1, ts, None, 5), '"d"'),  # scalar for an array
    ]
    for bad, column in cases:
        records = [good] * 1500 + [bad] + [good] * 10
        with pytest.raises(exceptions.DataError) as ei:
            await con.copy_records_to_table("cv", records=records)
        msg = str(ei.value)
        assert "record #1500" in msg and column in msg, msg
    with pytest.raises(exceptions.DataError, match=r"record #2 has 5 values, .* expects 4"):
        await con.copy_records_to_table("cv", records=[good, good, good + (1,)])
    with pytest.raises(exceptions.DataError, match="record #1 is not a sequence"):
        await con.copy_records_to_table("cv", records=[good, 42])
    assert await con.fetchval("SELECT count(*) FROM cv") == 0
    assert await con.copy_records_to_table("cv", records=[good]) == "COPY 1"
    assert tuple(await con.fetchrow("SELECT * FROM cv")) == good


async def test_copy_records_iterable_failure_aborts_and_reraises(con):
    await con.execute("CREATE TEMP TABLE ci2 (a int4)")

    def records():
        for i in range(5000):
            yield (i,)
        raise LookupError("the source ran dry")

    async def arecords():
        for i in range(5000):
            yield (i,)
        raise LookupError("the async source ran dry")

    with pytest.raises(LookupError, match="the source ran dry"):
        await con.copy_records_to_table("ci2", records=records())
    with pytest.raises(LookupError, match="async source"):
        await con.copy_records_to_table("ci2", records=arecords())
    assert await con.fetchval("SELECT count(*) FROM ci2") == 0
    async with con.transaction():
        assert await con.copy_records_to_table("ci2", records=[(1,)]) == "COPY 1"
    assert await con.fetchval("SELECT count(*) FROM ci2") == 1


async def test_copy_in_file_like_failure_aborts_and_reraises(con):
    await con.execute("CREATE TEMP TABLE cfl (a int4)")

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, size):
            self.calls += 1
            if self.calls > 3:
                raise OSError("read error")
            return b"".join(b"%d\n" % i for i in range(1000))

    with pytest.raises(OSError, match="read error"):
        await con.copy_to_table("cfl", source=Broken())
    assert await con.fetchval("SELECT count(*) FROM cfl") == 0
    assert await con.copy_to_table("cfl", source=b"7\n") == "COPY 1"


async def test_copy_out_sink_failure_with_file_like_reraises(con):
    class Full:
        def write(self, data):
            raise OSError("no space left")

    with pytest.raises(OSError, match="no space left"):
        await con.copy_from_query("SELECT generate_series(1, 500000)", output=Full())
    assert await asyncio.wait_for(con.fetchval("SELECT 3"), 10) == 3


async def test_cancel_mid_copy_out_and_mid_copy_in(con):
    started = asyncio.Event()

    async def slow(chunk):
        started.set()
        await asyncio.sleep(0.01)

    task = asyncio.ensure_future(
        con.copy_from_query(
            "SELECT g, repeat('x', 200) FROM generate_series(1, 2000000) g", output=slow
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(con.fetchval("SELECT 4"), 10) == 4

    await con.execute("CREATE TEMP TABLE cci (a int4)")
    sent = asyncio.Event()

    async def endless():
        i = 0
        while True:
            yield b"".join(b"%d\n" % j for j in range(i, i + 1000))
            i += 1000
            sent.set()
            await asyncio.sleep(0)

    task = asyncio.ensure_future(con.copy_to_table("cci", source=endless()))
    await asyncio.wait_for(sent.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(con.fetchval("SELECT count(*) FROM cci"), 10) == 0


async def test_copy_records_one_million_rows(con):
    await con.execute("CREATE TEMP TABLE cmil (a int4, b text, c timestamptz, d numeric)")
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

    def records():
        for i in range(1_000_000):
            yield (
                i,
                None if i % 7 == 0 else f"r{i}",
                base + datetime.timedelta(seconds=i) if i % 5 else None,
                decimal.Decimal(i) / 4 if i % 3 else None,
            )

    assert await con.copy_records_to_table("cmil", records=records()) == "COPY 1000000"
    row = await con.fetchrow(
        "SELECT count(*), sum(a::int8), count(b), count(c), sum(d), max(c) FROM cmil"
    )
    assert row[0] == 1_000_000
    assert row[1] == sum(range(1_000_000))
    assert row[2] == 1_000_000 - len(range(0, 1_000_000, 7))
    assert row[3] == 1_000_000 - len(range(0, 1_000_000, 5))
    assert row[4] == sum(decimal.Decimal(i) / 4 for i in range(1_000_000) if i % 3)
    assert row[5] == base + datetime.timedelta(seconds=999_999)
