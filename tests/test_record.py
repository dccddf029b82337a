"""Record, the row object: tuple and mapping behaviour, subclasses (``record_class=``),
construction and pickling refused, and its memory (one object per row, untracked by the GC,
every value released)."""

import gc
import pickle
import sys
import weakref

import pytest

from asyncpg_rs import Record, exceptions
from asyncpg_rs._native import create_record


def rec(**kw):
    return create_record({k: i for i, k in enumerate(kw)}, tuple(kw.values()))


class Sub(Record):
    pass


class Slotted(Record):
    __slots__ = ()


def test_type_identity():
    assert Record.__module__ == "asyncpg_rs.protocol.record"
    assert Record.__name__ == Record.__qualname__ == "Record"
    assert Record.__doc__
    assert Record.__itemsize__ == Record.__basicsize__ // 4 == 8  # header, desc, values
    r = rec(a=1, b="x")
    assert type(r) is Record
    assert sys.getsizeof(r) == Record.__basicsize__ + 2 * Record.__itemsize__


def test_tuple_like():
    r = rec(a=1, b="x", c=None)
    assert len(r) == 3
    assert r[0] == 1 and r[1] == "x" and r[2] is None
    assert r[-1] is None and r[-3] == 1
    assert r[True] == "x"
    for bad in (3, -4, 2**70, -(2**70)):
        with pytest.raises(IndexError, match="record index out of range"):
            r[bad]
    assert r[1:3] == ("x", None) and r[::-1] == (None, "x", 1) and r[5:] == ()
    assert list(r) == [1, "x", None] and tuple(r) == (1, "x", None)
    a, b, c = r
    assert (a, b, c) == (1, "x", None)
    assert list(reversed(r)) == [None, "x", 1]


def test_mapping_like():
    r = rec(a=1, b="x")
    assert r["a"] == 1 and r["b"] == "x"
    with pytest.raises(KeyError) as e:
        r["zz"]
    assert e.value.args == ("zz",)
    with pytest.raises(KeyError):
        r[1.5]
    with pytest.raises(KeyError):
        r[None]
    assert r.get("a") == 1 and r.get("zz") is None and r.get("zz", 5) == 5
    assert r.get(name="b") == "x" and r.get("zz", default=7) == 7
    with pytest.raises(TypeError):
        r.get()
    with pytest.raises(TypeError):
        r.get("a", 1, 2)
    with pytest.raises(TypeError):
        r.get("a", nope=1)
    with pytest.raises(TypeError):
        r.get("a", name="a")
    assert list(r.keys()) == ["a", "b"]
    assert list(r.values()) == [1, "x"]
    assert list(r.items()) == [("a", 1), ("b", "x")]
    assert dict(r) == {"a": 1, "b": "x"}
    assert "a" in r and "zz" not in r and 1 not in r
    with pytest.raises(TypeError):
        _ = {} in r


def test_without_names():
    r = create_record(None, (1, 2))
    assert r[0] == 1 and len(r) == 2 and list(r.keys()) == [] and "a" not in r
    assert repr(r) == "<Record>"
    with pytest.raises(RuntimeError, match="invalid record mapping"):
        create_record({"a": 0}, (1, 2))


def test_hash_and_compare_as_tuple():
    r = rec(a=1, b="x")
    assert hash(r) == hash((1, "x"))
    assert r == (1, "x") and (1, "x") == r and r != (1, "y")
    assert r == rec(c=1, d="x")  # the names do not count
    assert r < (1, "y") and r <= (1, "x") and r > (1,) and r >= (0, "z")
    assert rec(a=1) < rec(a=2)
    assert r != [1, "x"] and r != "x"
    with pytest.raises(TypeError):
        _ = r < 5
    with pytest.raises(TypeError):
        hash(rec(a=[1]))
    assert {r: 1}[(1, "x")] == 1


def test_repr():
    assert repr(rec(a=1, b="x")) == "<Record a=1 b='x'>"
    assert repr(rec()) == "<Record>"
    assert repr(create_record({"a": 0}, (1,), Sub)) == "<Sub a=1>"


def test_not_constructible_nor_picklable():
    for cls in (Record, Sub):
        with pytest.raises(TypeError, match=r"cannot create 'asyncpg.protocol.record.Record'"):
            cls()
        with pytest.raises(TypeError):
            cls(1, x=2)
    with pytest.raises(TypeError, match="object.__new__"):
        object.__new__(Record)
    with pytest.raises(TypeError, match="cannot pickle asyncpg_rs.protocol.record.Record"):
        pickle.dumps(rec(a=1))
    with pytest.raises(TypeError, match="cannot pickle .*Sub objects"):
        pickle.dumps(create_record({"a": 0}, (1,), Sub))
    assert Sub.__new__ is Record.__new__ and Sub.__init__ is Record.__init__


def test_not_tracked_by_the_gc():
    assert not gc.is_tracked(rec(a=[1], b={}))
    # (CPython tracks the instances of a Python subclass, whose type it references)


def test_subclasses():
    s = create_record({"a": 0, "b": 1}, (1, "x"), Sub)
    assert type(s) is Sub and isinstance(s, Record)
    assert s["b"] == "x" and s[0] == 1 and s == (1, "x") and s == rec(a=1, b="x")
    assert hash(s) == hash((1, "x"))
    s.extra = 5  # a subclass without __slots__ has a __dict__
    assert s.__dict__ == {"extra": 5}
    t = create_record({"a": 0}, (2,), Slotted)
    assert type(t) is Slotted and t["a"] == 2 and not hasattr(t, "__dict__")
    with pytest.raises(AttributeError):
        t.extra = 1

    class WithProperty(Record):
        @property
        def doubled(self):
            return self["a"] * 2

    assert create_record({"a": 0}, (21,), WithProperty).doubled == 42
    with pytest.raises(TypeError, match="nonempty __slots__"):

        class _Slots(Record):
            __slots__ = ("x",)

    with pytest.raises(TypeError, match="subclass of Record"):
        create_record({"a": 0}, (1,), int)


def test_references_released():
    class Tracked:
        pass

    for cls in (None, Sub, Slotted):
        refs = []
        before = sys.getrefcount(cls) if cls else None
        for _ in range(50):
            v = Tracked()
            refs.append(weakref.ref(v))
            r = create_record({"a": 0, "b": 1}, (v, "x"), cls)
            if cls is Sub:
                r.extra = v
            del v, r
        gc.collect()
        assert all(w() is None for w in refs)
        if cls:
            assert sys.getrefcount(cls) == before  # rows hold their class, and let go


async def test_fetched_rows(con):
    rows = await con.fetch("SELECT 1 AS a, 'x'::text AS b UNION ALL SELECT 2, NULL")
    assert [tuple(r) for r in rows] == [(1, "x"), (2, None)]
    assert rows[0]["a"] == 1 and repr(rows[1]) == "<Record a=2 b=None>"
    assert all(type(r) is Record and not gc.is_tracked(r) for r in rows)
    rows = await con.fetch("SELECT generate_series(1, 3) AS n", record_class=Sub)
    assert [type(r) for r in rows] == [Sub] * 3 and [r["n"] for r in rows] == [1, 2, 3]
    rows[0].note = "ok"
    rows = await con.fetch("SELECT 1 AS a", record_class=Slotted)
    assert type(rows[0]) is Slotted and rows[0]["a"] == 1
    row = await con.fetchrow("SELECT 1 AS a, 2 AS a")
    assert row["a"] == 2 and repr(row) == "<Record a=1 a=2>"  # a name finds its last column
    row = await con.fetchrow("SELECT ROW(1, 'x') AS r")
    assert type(row["r"]) is Record and tuple(row["r"]) == (1, "x")
    with pytest.raises(exceptions.InterfaceError):
        await con.fetch("SELECT 1", record_class=dict)


async def test_failed_decode_releases_the_half_row(con):
    class Boom(Exception):
        pass

    made = []

    class Value:
        pass

    def decoder(data):
        if data == "boom":
            raise Boom()
        v = Value()
        made.append(weakref.ref(v))
        return v

    await con.execute("CREATE DOMAIN pg_temp.boomtext AS text")
    await con.set_type_codec("text", schema="pg_catalog", decoder=decoder, encoder=str)
    for cls in (None, Sub):
        with pytest.raises(Boom):
            await con.fetch(
                "SELECT 'a'::text, 'boom'::text", **({"record_class": cls} if cls else {})
            )
    gc.collect()
    assert made and all(w() is None for w in made)
    assert [tuple(r) for r in await con.fetch("SELECT 1")] == [(1,)]
