"""Property tests: values round-trip through asyncpg_rs exactly as through asyncpg.

Every generated value is sent as a query argument through both drivers against the same
server. Both must agree on what the server stored (its text form of the value), on the
Python value that comes back, and, for input either one refuses, on the exception class.
Without a reference asyncpg installed the module is skipped.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import uuid

import pytest

hypothesis = pytest.importorskip("hypothesis")
asyncpg = pytest.importorskip("asyncpg")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import asyncpg_rs  # noqa: E402
from asyncpg_rs import types as rs_types  # noqa: E402

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Pair:
    """One asyncpg_rs and one asyncpg connection to the same server, on one loop."""

    def __init__(self, pg):
        self.loop = asyncio.new_event_loop()
        kw = pg.connect_kwargs()
        self.rs = self.run(asyncpg_rs.connect(**kw))
        self.ref = self.run(asyncpg.connect(**kw))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self):
        self.run(self.rs.close())
        self.run(self.ref.close())
        self.loop.close()

    def both(self, query, *args):
        """(asyncpg_rs outcome, asyncpg outcome); an outcome is ('ok', value) or ('err', class
        name)."""
        out = []
        for con in (self.rs, self.ref):
            try:
                out.append(("ok", self.run(con.fetchval(query, *args))))
            except Exception as e:  # noqa: BLE001 - the class is what is compared
                out.append(("err", type(e).__name__))
        return out


@pytest.fixture(scope="module")
def pair(pg):
    p = Pair(pg)
    try:
        yield p
    finally:
        p.close()


def normal(value, exact=True):
    """A comparable form: NaN made equal to itself, ranges and UUIDs of either driver
    alike, the Python type kept. ``exact`` compares Decimals by their digits and exponent
    (what the two drivers must agree on), else by value (what a round trip keeps)."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, decimal.Decimal):
        if exact:
            return ("Decimal", str(value))
        return ("Decimal", "NaN" if value.is_nan() else value)
    if isinstance(value, uuid.UUID):
        return ("UUID", value.int)
    if isinstance(value, (asyncpg.Range, rs_types.Range)):
        if value.isempty:
            return ("Range", "empty")
        return (
            "Range",
            normal(value.lower, exact),
            normal(value.upper, exact),
            value.lower_inc,
            value.upper_inc,
        )
    if isinstance(value, list):
        return ("list", [normal(v, exact) for v in value])
    if isinstance(value, datetime.datetime):
        return ("datetime", value, value.utcoffset())
    if isinstance(value, datetime.time):
        return ("time", value, value.utcoffset())
    return (type(value).__name__, value)


def check(pair, sqltype, value, ref_value=None, roundtrip=True):
    """Send ``value`` (``ref_value`` to asyncpg, when the drivers' types differ) as
    ``sqltype`` through both drivers and compare."""
    ref_value = value if ref_value is None else ref_value
    results = []
    for con, v in ((pair.rs, value), (pair.ref, ref_value)):
        try:
            got = pair.run(con.fetchrow(f"SELECT $1::{sqltype} AS v, $1::{sqltype}::text AS t", v))
            results.append(("ok", normal(got["v"]), got["t"], normal(got["v"], False)))
        except Exception as e:  # noqa: BLE001 - the class is what is compared
            results.append(("err", type(e).__name__, str(e)))
    rs, ref = results
    if ref[0] == "err":
        assert rs[0] == "err", f"asyncpg refused {value!r} ({ref[2]}), asyncpg_rs took it"
        assert rs[1] == ref[1], f"{value!r}: asyncpg_rs {rs}, asyncpg {ref}"
        return
    assert rs[0] == "ok", f"asyncpg took {value!r}, asyncpg_rs refused it: {rs[2]}"
    assert rs[2] == ref[2], f"{value!r} stored differently: {rs[2]!r} vs {ref[2]!r}"
    assert rs[1] == ref[1], f"{value!r} came back differently"
    if roundtrip:
        assert rs[3] == normal(value, False), f"{value!r} did not come back as itself"


# ---------------------------------------------------------------- strategies

OFFSETS = st.integers(-15 * 60, 15 * 60).map(
    lambda m: datetime.timezone(datetime.timedelta(minutes=m))
)
TZ = st.one_of(st.just(datetime.UTC), OFFSETS)
TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=60)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan()),
    # huge and tiny scales, both signs
    st.builds(
        lambda digits, exp, neg: decimal.Decimal((int(neg), tuple(digits), exp)),
        st.lists(st.integers(0, 9), min_size=1, max_size=40),
        st.integers(-2000, 2000),
        st.booleans(),
    ),
)

SCALARS = {
    "int2": st.integers(-(2**15), 2**15 - 1),
    "int4": st.integers(-(2**31), 2**31 - 1),
    "int8": st.integers(-(2**63), 2**63 - 1),
    "float8": FLOATS,
    "numeric": DECIMALS,
    "text": TEXT,
    "bytea": st.binary(max_size=80),
    "timestamptz": st.datetimes(timezones=TZ),
    "timestamp": st.datetimes(),
    "date": st.dates(),
    "time": st.times(),
    "timetz": st.times(timezones=OFFSETS),
    "interval": st.timedeltas(),
    "uuid": st.uuids(),
}


# ---------------------------------------------------------------- scalars


@pytest.mark.parametrize("sqltype", list(SCALARS))
def test_scalar_round_trip_matches_asyncpg(pair, sqltype):
    # timestamptz comes back in UTC: equal as an instant, not as the same tzinfo
    roundtrip = sqltype not in ("timestamptz",)

    @SETTINGS
    @given(SCALARS[sqltype])
    def run(value):
        check(pair, sqltype, value, roundtrip=roundtrip)
        if sqltype == "timestamptz":
            got = pair.run(pair.rs.fetchval("SELECT $1::timestamptz", value))
            assert got == value and got.utcoffset() == datetime.timedelta(0)

    run()


@pytest.mark.parametrize(
    "sqltype,value",
    [
        ("int2", 2**15),
        ("int4", -(2**31) - 1),
        ("int8", 2**63),
        ("int4", "1"),
        ("int4", 1.5),
        ("float8", "x"),
        ("numeric", "abc"),
        ("text", 5),
        ("bytea", "str"),
        ("date", datetime.datetime(2020, 1, 1, 1)),
        ("date", "2020-01-01"),
        ("timestamp", datetime.date(2020, 1, 1)),
        ("uuid", "nope"),
        ("interval", 5),
        ("timetz", datetime.time(1, 2)),
    ],
)
def test_bad_input_fails_as_in_asyncpg(pair, sqltype, value):
    # some of it asyncpg takes after all (1.5 for int4, a datetime for a date): then the
    # two must agree on what was stored
    check(pair, sqltype, value, roundtrip=False)


def test_numeric_beyond_the_wire_format_is_refused(pair):
    # asyncpg 0.32 silently sends these as a different number; asyncpg_rs refuses them
    for value in ("1E+200000", "1E-20000"):
        with pytest.raises(asyncpg_rs.DataError, match="numeric value out of range"):
            pair.run(pair.rs.fetchval("SELECT $1::numeric", decimal.Decimal(value)))
    assert pair.run(pair.rs.fetchval("SELECT 1")) == 1


# ---------------------------------------------------------------- arrays


def _rectangular(elems, max_dims=3):
    """Nested lists of a regular shape: 1 to ``max_dims`` dimensions."""

    def build(shape):
        n = 1
        for d in shape:
            n *= d
        return st.lists(elems, min_size=n, max_size=n).map(lambda flat: _reshape(flat, shape))

    return st.lists(st.integers(1, 3), min_size=1, max_size=max_dims).flatmap(build)


def _reshape(flat, shape):
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


ARRAY_TYPES = [
    "int2",
    "int4",
    "int8",
    "float8",
    "numeric",
    "text",
    "bytea",
    "timestamptz",
    "date",
    "interval",
    "uuid",
]


@pytest.mark.parametrize("elemtype", ARRAY_TYPES)
def test_array_round_trip_matches_asyncpg(pair, elemtype):
    elems = st.one_of(st.none(), SCALARS[elemtype])
    arrays = st.one_of(st.lists(elems, max_size=8), _rectangular(elems))

    @SETTINGS
    @given(arrays)
    def run(value):
        check(pair, f"{elemtype}[]", value, roundtrip=elemtype != "timestamptz")

    run()


def test_array_edge_cases_match_asyncpg(pair):
    for sqltype, value in [
        ("int4[]", []),
        ("int4[]", [[]]),
        ("int4[]", [None]),
        ("int4[]", [[1, 2], [3]]),
        ("int4[]", [[1, 2], 3]),
        ("int4[]", [1, [2]]),
        ("int4[]", "not a list"),
        ("int4[]", (1, 2, 3)),
        ("text[]", ["a", None, "", "NULL", '"', "\\", "{,}"]),
        ("int4[]", [[[[[[[1]]]]]]]),
        ("int4[]", [[[[[[1]]]]]]),
    ]:
        check(pair, sqltype, value, roundtrip=False)


# ---------------------------------------------------------------- ranges


def _range_values(bound):
    def build(lo, hi, lo_inc, hi_inc, empty):
        if empty:
            return (rs_types.Range(empty=True), asyncpg.Range(empty=True))
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        kw = {"lower_inc": lo_inc, "upper_inc": hi_inc}
        return (rs_types.Range(lo, hi, **kw), asyncpg.Range(lo, hi, **kw))

    opt = st.one_of(st.none(), bound)
    return st.builds(build, opt, opt, st.booleans(), st.booleans(), st.booleans())


RANGES = {
    "int4range": _range_values(st.integers(-(2**31) + 1, 2**31 - 2)),
    "int8range": _range_values(st.integers(-(2**63) + 1, 2**63 - 2)),
    "numrange": _range_values(
        st.decimals(
            allow_nan=False, allow_infinity=False, places=3, min_value=-(10**6), max_value=10**6
        )
    ),
    "daterange": _range_values(
        st.dates(min_value=datetime.date(1, 1, 2), max_value=datetime.date(9999, 12, 30))
    ),
    "tstzrange": _range_values(st.datetimes(timezones=st.just(datetime.UTC))),
}


@pytest.mark.parametrize("sqltype", list(RANGES))
def test_range_round_trip_matches_asyncpg(pair, sqltype):
    @SETTINGS
    @given(RANGES[sqltype])
    def run(values):
        rs_value, ref_value = values
        # discrete ranges come back canonical ([lo, hi+1)), so only compare the drivers
        check(pair, sqltype, rs_value, ref_value, roundtrip=False)
        check(pair, sqltype + "[]", [rs_value, None], [ref_value, None], roundtrip=False)

    run()


@pytest.mark.parametrize("value", [(1, 9), (), (None, 2), (3, None), [1, 5], (None, None)])
def test_range_from_a_tuple_matches_asyncpg(pair, value):
    check(pair, "int4range", value, roundtrip=False)
    check(pair, "int4multirange", [value], roundtrip=False)


# ---------------------------------------------------------------- text-format arrays


# no empty strings: asyncpg 0.32 crashes on an empty element of a text-format array (it
# comes back as a NULL pointer); tests/test_codecs_custom.py covers them for asyncpg_rs
TRICKY_TEXT = st.text(st.sampled_from(list("ab ,{}\"\\'\tNULnul\u00e9")), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def text_only_type(pair):
    """A base type with no binary I/O, so neither driver has a binary codec for it and
    arrays of it travel in PostgreSQL's text array syntax (quoting, escapes, NULL, nesting).
    """
    ddl = [
        "DROP TYPE IF EXISTS hyp_txt CASCADE",
        "CREATE TYPE hyp_txt",
        "CREATE FUNCTION hyp_txt_in(cstring) RETURNS hyp_txt AS 'textin' "
        "LANGUAGE internal IMMUTABLE STRICT",
        "CREATE FUNCTION hyp_txt_out(hyp_txt) RETURNS cstring AS 'textout' "
        "LANGUAGE internal IMMUTABLE STRICT",
        "CREATE TYPE hyp_txt (INPUT = hyp_txt_in, OUTPUT = hyp_txt_out, LIKE = text)",
    ]
    for stmt in ddl:
        pair.run(pair.rs.execute(stmt))
    try:
        yield "hyp_txt"
    finally:
        pair.run(pair.rs.execute("DROP TYPE hyp_txt CASCADE"))


def test_text_format_arrays_match_asyncpg(pair, text_only_type):
    elems = st.one_of(st.none(), TRICKY_TEXT)
    arrays = st.one_of(st.lists(elems, max_size=6), _rectangular(elems))

    @SETTINGS
    @given(arrays)
    def run(value):
        check(pair, f"{text_only_type}[]", value)

    run()


@pytest.mark.parametrize(
    "sqltype,rangetype", [("int4multirange", "int4range"), ("datemultirange", "daterange")]
)
def test_multirange_round_trip_matches_asyncpg(pair, sqltype, rangetype):
    @SETTINGS
    @given(st.lists(RANGES[rangetype], max_size=4))
    def run(ranges):
        check(pair, sqltype, [r for r, _ in ranges], [r for _, r in ranges], roundtrip=False)

    run()
