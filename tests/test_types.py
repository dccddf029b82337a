"""Builtin type codecs: round trips checked by the server, edge values, arrays, bad input."""

import datetime
import decimal
import math
import uuid

import pytest

from asyncpg_rs import exceptions

UTC = datetime.UTC

# (type, python value, the server's text for it)
ROUND_TRIPS = [
    ("bool", True, "true"),
    ("bool", False, "false"),
    ("int2", -32768, "-32768"),
    ("int2", 32767, "32767"),
    ("int4", -2147483648, "-2147483648"),
    ("int4", 2147483647, "2147483647"),
    ("int8", -9223372036854775808, "-9223372036854775808"),
    ("int8", 9223372036854775807, "9223372036854775807"),
    ("oid", 4294967295, "4294967295"),
    ("float8", 1.5, "1.5"),
    ("float8", -0.0, "-0"),
    ("float8", float("inf"), "Infinity"),
    ("float4", 0.25, "0.25"),
    ("numeric", decimal.Decimal("0"), "0"),
    ("numeric", decimal.Decimal("-123.4500"), "-123.4500"),
    ("numeric", decimal.Decimal("0.000012300"), "0.000012300"),
    (
        "numeric",
        decimal.Decimal("12345678901234567890.123456789"),
        "12345678901234567890.123456789",
    ),
    # an integer with trailing zero digit groups comes back with an exponent, as in asyncpg
    ("numeric", decimal.Decimal("1E+60"), "1" + "0" * 60),
    ("numeric", decimal.Decimal("1.2E+5"), "120000"),
    ("numeric", decimal.Decimal("NaN"), "NaN"),
    ("numeric", decimal.Decimal("Infinity"), "Infinity"),
    ("numeric", decimal.Decimal("-Infinity"), "-Infinity"),
    ("text", "héllo wörld 🐘", "héllo wörld 🐘"),
    ("text", "", ""),
    ("varchar", "v", "v"),
    ("name", "nm", "nm"),
    ("bpchar", "abc", "abc"),
    ("bytea", b"\x00\x01\xff", "\\x0001ff"),
    (
        "uuid",
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    ("date", datetime.date(2024, 2, 29), "2024-02-29"),
    ("date", datetime.date(1, 1, 2), "0001-01-02"),
    ("date", datetime.date(1999, 12, 31), "1999-12-31"),
    ("time", datetime.time(23, 59, 59, 999999), "23:59:59.999999"),
    (
        "timetz",
        datetime.time(1, 2, 3, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
        "01:02:03+05:30",
    ),
    ("timestamp", datetime.datetime(1970, 1, 1, 0, 0, 0, 1), "1970-01-01 00:00:00.000001"),
    ("timestamp", datetime.datetime(1850, 6, 15, 12, 30), "1850-06-15 12:30:00"),
    ("timestamptz", datetime.datetime(2000, 1, 1, tzinfo=UTC), "2000-01-01 00:00:00+00"),
    ("interval", datetime.timedelta(days=3, seconds=7, microseconds=5), "3 days 00:00:07.000005"),
    ("interval", datetime.timedelta(days=-1, seconds=1), "-1 days +00:00:01"),
    ("json", '{"a": [1, 2]}', '{"a": [1, 2]}'),
    ("jsonb", '{"a": [1, 2]}', '{"a": [1, 2]}'),
    ("int4[]", [1, None, 3], "{1,NULL,3}"),
    ("int4[]", [], "{}"),
    ("int4[]", [[1, 2], [3, 4]], "{{1,2},{3,4}}"),
    ("text[]", ["a", "b c", None, ""], '{a,"b c",NULL,""}'),
    ("numeric[]", [decimal.Decimal("1.5")], "{1.5}"),
    ("timestamptz[]", [datetime.datetime(2020, 1, 1, tzinfo=UTC)], '{"2020-01-01 00:00:00+00"}'),
    ("uuid[]", [uuid.UUID(int=1)], "{00000000-0000-0000-0000-000000000001}"),
    ("bool[]", [True, False], "{t,f}"),
]


async def test_round_trips_verified_by_the_server(con):
    await con.execute("SET TIME ZONE 'UTC'; SET extra_float_digits = 1")
    for typ, value, text in ROUND_TRIPS:
        back, server_text = await con.fetchrow(f"SELECT $1::{typ}, $1::{typ}::text", value)
        assert server_text == text, (typ, value, server_text)
        same = (lambda a, b: str(a) == str(b)) if typ == "numeric" else (lambda a, b: a == b)
        assert same(back, value), (typ, value, back)
        assert type(back) is type(value), (typ, type(back))
        # the server's own text, parsed by the server, decodes to the same Python value
        decoded = await con.fetchval(f"SELECT $1::text::{typ}", text)
        assert same(decoded, value), (typ, text, decoded)


async def test_nulls_and_special_floats(con):
    assert await con.fetchval("SELECT NULL::int4") is None
    assert await con.fetchval("SELECT $1::text", None) is None
    assert math.isnan(await con.fetchval("SELECT 'NaN'::float8"))
    assert (await con.fetchval("SELECT 'NaN'::numeric")).is_nan()


async def test_infinity_and_timezones(con):
    await con.execute("SET TIME ZONE 'Asia/Kolkata'")
    assert await con.fetchval("SELECT 'infinity'::date") == datetime.date.max
    assert await con.fetchval("SELECT '-infinity'::date") == datetime.date.min
    assert await con.fetchval("SELECT 'infinity'::timestamp") == datetime.datetime.max
    assert await con.fetchval("SELECT $1::date::text", datetime.date.max) == "infinity"
    assert await con.fetchval("SELECT $1::timestamp::text", datetime.datetime.min) == "-infinity"
    # timestamptz always comes back in UTC, whatever the session time zone
    v = await con.fetchval("SELECT '2020-01-01 05:30:00+05:30'::timestamptz")
    assert v == datetime.datetime(2020, 1, 1, tzinfo=UTC) and v.tzinfo is UTC
    minus4 = datetime.timezone(datetime.timedelta(hours=-4))
    aware = datetime.datetime(2020, 1, 1, 12, tzinfo=minus4)
    assert await con.fetchval("SELECT $1::timestamptz", aware) == aware
    # interval months and years count 30 and 365 days, as asyncpg reports them
    assert await con.fetchval("SELECT '1 year 2 mons 3 days'::interval") == (
        datetime.timedelta(days=365 + 60 + 3)
    )


async def test_large_values(con):
    big = "x" * (1 << 20)
    assert await con.fetchval("SELECT $1::text", big) == big
    blob = bytes(range(256)) * 4096
    assert await con.fetchval("SELECT $1::bytea", blob) == blob
    arr = list(range(100000))
    assert await con.fetchval("SELECT $1::int8[]", arr) == arr


async def test_uuid_accepts_str_and_returns_uuid(con):
    u = await con.fetchval("SELECT $1::uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert isinstance(u, uuid.UUID) and str(u) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert u.version == 4 and hash(u) == hash(uuid.UUID(str(u)))


@pytest.mark.parametrize(
    "typ, value, reason",
    [
        ("int2", 40000, "value out of int16 range"),
        ("int4", 2**31, "value out of int32 range"),
        ("int4", "5", "cannot be interpreted as an integer"),
        ("float4", 1e40, "value out of float32 range"),
        ("float8", "1.0", "must be real number, not str"),
        ("bool", 1, "a boolean is required"),
        ("text", 5, "expected str, got int"),
        ("bytea", "abc", "a bytes-like object is required"),
        ("uuid", 5, "has no attribute 'bytes'"),
        ("timestamp", datetime.datetime(2020, 1, 1, tzinfo=UTC), "offset-naive and offset-aware"),
        ("int4[]", "abc", "a sized iterable container expected"),
        ("int4[]", [[1, 2], [3]], "non-homogeneous array"),
        ("int4[]", [1, [2]], "non-homogeneous array"),
        ("numeric", "abc", "invalid numeric value"),
    ],
)
async def test_bad_values_name_the_argument(con, typ, value, reason):
    with pytest.raises(exceptions.DataError) as ei:
        await con.fetchval(f"SELECT 1 WHERE $1::{typ} IS NULL", value)
    msg = str(ei.value)
    assert msg.startswith("invalid input for query argument $1:"), msg
    assert reason in msg
    assert typ.replace("[]", "") in ei.value.hint
    assert await con.fetchval("SELECT 1") == 1


async def test_types_without_binary_codec_travel_as_text(con):
    # tsvector has no binary codec in asyncpg either: it is text both ways
    assert await con.fetchval("SELECT 'b a'::tsvector") == "'a' 'b'"
    assert await con.fetchval("SELECT $1::tsvector::text", "x y") == "'x' 'y'"
    assert await con.fetchval("SELECT '<a/>'::xml") == "<a/>"
    assert await con.fetchval("SELECT $1::xml::text", "<b/>") == "<b/>"


async def test_network_geometry_bits_and_misc_types(con):
    import ipaddress

    from asyncpg_rs import types

    cases = [
        ("inet", ipaddress.ip_interface("192.168.1.5/24"), "192.168.1.5/24"),
        ("inet", ipaddress.ip_address("::1"), "::1/128"),
        ("cidr", ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
        ("macaddr", "08:00:2b:01:02:03", "08:00:2b:01:02:03"),
        ("point", types.Point(1, 2.5), "(1,2.5)"),
        ("line", types.Line(1, 2, 3), "{1,2,3}"),
        ("lseg", types.LineSegment((1, 2), (3, 4)), "[(1,2),(3,4)]"),
        ("box", types.Box((3, 4), (1, 2)), "(3,4),(1,2)"),
        ("path", types.Path((1, 2), (3, 4), is_closed=True), "((1,2),(3,4))"),
        ("path", types.Path((1, 2), (3, 4)), "[(1,2),(3,4)]"),
        ("polygon", types.Polygon((0, 0), (1, 0), (1, 1)), "((0,0),(1,0),(1,1))"),
        ("circle", types.Circle((1, 2), 3), "<(1,2),3>"),
        ("varbit", types.BitString("10110"), "10110"),
        ("bit(5)", types.BitString("10110"), "10110"),
        ("pg_lsn", 97500059720, "16/B374D848"),
        ("tid", (1, 2), "(1,2)"),
        ("inet[]", [ipaddress.ip_address("10.0.0.1"), None], "{10.0.0.1,NULL}"),
    ]
    for typ, value, text in cases:
        back, server_text = await con.fetchrow(f"SELECT $1::{typ}, $1::{typ}::text", value)
        assert server_text == text, (typ, server_text)
        assert back == value, (typ, back)
    assert await con.fetchval("SELECT $1::inet", "10.1.2.3") == ipaddress.ip_address("10.1.2.3")
    assert types.BitString.from_int(5, 4).to_int() == 5
    assert repr(types.BitString("10110")) == "<BitString 1011 0>"
    assert types.Range(1, 5).issubset(types.Range(0, 10))
    assert repr(types.Range(1, 5)) == "<Range [1, 5)>"
    with pytest.raises(exceptions.DataError, match="query argument \\$1"):
        await con.fetchval("SELECT $1::inet", 5)
