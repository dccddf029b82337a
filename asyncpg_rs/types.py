"""Python types for PostgreSQL values that have no natural builtin equivalent.

The names, constructors and behaviour follow ``asyncpg.types``.
"""

from __future__ import annotations

import typing

from .serverversion import ServerVersion

if typing.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    # a point as the constructors take it: a Point or any (x, y) pair
    _PointLike = Sequence[float]

    class _RangeValue(typing.Protocol):
        # issubset() compares bounds
        def __lt__(self, other: typing.Any, /) -> bool: ...
        def __gt__(self, other: typing.Any, /) -> bool: ...


# the type of a range's bounds (int for int4range, datetime for tsrange, ...)
_RV = typing.TypeVar("_RV", bound="_RangeValue")

__all__ = (
    "Type",
    "Attribute",
    "Range",
    "BitString",
    "Point",
    "Path",
    "Polygon",
    "Box",
    "Line",
    "LineSegment",
    "Circle",
    "ServerVersion",
)


class Type(typing.NamedTuple):
    """A database type: ``oid``, ``name``, ``kind`` ('scalar', 'array', ...) and ``schema``."""

    oid: int
    name: str
    kind: str
    schema: str


class Attribute(typing.NamedTuple):
    """A result column: its ``name`` and :class:`Type`."""

    name: str
    type: Type


# ------------------------------------------------------------------ ranges


class Range(typing.Generic[_RV]):
    """An immutable range: ``Range(1, 5)`` is ``[1,5)``; ``Range(empty=True)`` is empty.

    A bound of ``None`` is infinite.
    """

    __slots__ = ("_lower", "_upper", "_lower_inc", "_upper_inc", "_empty")

    def __init__(
        self,
        lower: _RV | None = None,
        upper: _RV | None = None,
        *,
        lower_inc: bool = True,
        upper_inc: bool = False,
        empty: bool = False,
    ) -> None:
        self._empty = empty
        if empty:
            self._lower = self._upper = None
            self._lower_inc = self._upper_inc = False
        else:
            self._lower = lower
            self._upper = upper
            self._lower_inc = lower is not None and lower_inc
            self._upper_inc = upper is not None and upper_inc

    @property
    def lower(self) -> _RV | None:
        return self._lower

    @property
    def lower_inc(self) -> bool:
        return self._lower_inc

    @property
    def lower_inf(self) -> bool:
        return self._lower is None and not self._empty

    @property
    def upper(self) -> _RV | None:
        return self._upper

    @property
    def upper_inc(self) -> bool:
        return self._upper_inc

    @property
    def upper_inf(self) -> bool:
        return self._upper is None and not self._empty

    @property
    def isempty(self) -> bool:
        return self._empty

    def _key(self) -> tuple[object, ...]:
        return (self._lower, self._upper, self._lower_inc, self._upper_inc, self._empty)

    def __bool__(self) -> bool:
        return not self._empty

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Range):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def issubset(self, other: Range[_RV]) -> bool:
        """Whether every value in this range is also in ``other``."""
        if self._empty:
            return True
        if other._empty:
            return False
        if other._lower is not None:
            if self._lower is None or self._lower < other._lower:
                return False
            if self._lower == other._lower and self._lower_inc and not other._lower_inc:
                return False
        if other._upper is not None:
            if self._upper is None or self._upper > other._upper:
                return False
            if self._upper == other._upper and self._upper_inc and not other._upper_inc:
                return False
        return True

    def issuperset(self, other: Range[_RV]) -> bool:
        """Whether every value in ``other`` is also in this range."""
        return other.issubset(self)

    def __repr__(self) -> str:
        if self._empty:
            desc = "empty"
        else:
            lb = "[" if self._lower_inc else "("
            ub = "]" if self._upper_inc else ")"
            lo = "" if self._lower is None else repr(self._lower)
            hi = "" if self._upper is None else repr(self._upper)
            desc = f"{lb}{lo}, {hi}{ub}"
        return f"<Range {desc}>"

    __str__ = __repr__


# ------------------------------------------------------------------ bit strings


class BitString:
    """An immutable string of bits (``bit``/``varbit``): ``BitString('10110')``."""

    __slots__ = ("_bytes", "_bitlength")

    def __init__(self, bitstring: str | None = None) -> None:
        if not bitstring:
            self._bytes = b""
            self._bitlength = 0
            return
        bits = bitstring.replace(" ", "")
        if any(c not in "01" for c in bits):
            raise ValueError(f"invalid bit value in {bitstring!r}: only 0 and 1 allowed")
        self._bitlength = len(bits)
        padded = bits + "0" * (-len(bits) % 8)
        self._bytes = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))

    @classmethod
    def frombytes(cls, bytes_: bytes = b"", bitlength: int | None = None) -> typing.Self:
        """A BitString from packed bytes; ``bitlength`` trims the last byte's padding."""
        if bitlength is None:
            bitlength = len(bytes_) * 8
        elif not 0 <= bitlength <= len(bytes_) * 8 or bitlength <= len(bytes_) * 8 - 8:
            raise ValueError("bitlength does not match the number of bytes")
        obj = cls.__new__(cls)
        data = bytearray(bytes_)
        if bitlength % 8 and data:
            data[-1] &= (0xFF << (8 - bitlength % 8)) & 0xFF
        obj._bytes = bytes(data)
        obj._bitlength = bitlength
        return obj

    @classmethod
    def from_int(
        cls,
        x: int,
        length: int,
        bitorder: typing.Literal["big", "little"] = "big",
        *,
        signed: bool = False,
    ) -> typing.Self:
        """A BitString of ``length`` bits holding the integer ``x``."""
        if length < 0:
            raise ValueError("length must be non-negative")
        if bitorder not in ("big", "little"):
            raise ValueError("bitorder must be either 'big' or 'little'")
        if signed:
            if not -(1 << (length - 1)) <= x < (1 << (length - 1)) if length else x != 0:
                raise OverflowError("int too big to convert")
            x &= (1 << length) - 1
        elif x < 0 or x >> length:
            raise OverflowError("int too big to convert")
        bits = format(x, f"0{length}b") if length else ""
        if bitorder == "little":
            bits = bits[::-1]
        return cls(bits)

    def to_int(
        self, bitorder: typing.Literal["big", "little"] = "big", *, signed: bool = False
    ) -> int:
        """The bits as an integer."""
        if bitorder not in ("big", "little"):
            raise ValueError("bitorder must be either 'big' or 'little'")
        bits = self.as_string()
        if bitorder == "little":
            bits = bits[::-1]
        if not bits:
            return 0
        x = int(bits, 2)
        if signed and bits[0] == "1":
            x -= 1 << len(bits)
        return x

    @property
    def bytes(self) -> bytes:
        return self._bytes

    def as_string(self) -> str:
        bits = "".join(format(b, "08b") for b in self._bytes)
        return bits[: self._bitlength]

    def __len__(self) -> int:
        return self._bitlength

    def __iter__(self) -> Iterator[int]:
        return (int(c) for c in self.as_string())

    def __getitem__(self, i: int) -> int:
        return int(self.as_string()[i])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BitString):
            return NotImplemented
        return self._bytes == other._bytes and self._bitlength == other._bitlength

    def __hash__(self) -> int:
        return hash((self._bytes, self._bitlength))

    def __repr__(self) -> str:
        bits = self.as_string()
        groups = " ".join(bits[i : i + 4] for i in range(0, len(bits), 4))
        return f"<BitString {groups}>"

    __str__ = as_string


# ------------------------------------------------------------------ geometry


class Point(tuple[float, float]):
    """A point ``(x, y)``."""

    __slots__ = ()

    def __new__(cls, x: float, y: float) -> typing.Self:
        return super().__new__(cls, (float(x), float(y)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]!r}, {self[1]!r})"

    @property
    def x(self) -> float:
        return self[0]

    @property
    def y(self) -> float:
        return self[1]


class Box(tuple[Point, Point]):
    """A box given by its ``high`` and ``low`` corners."""

    __slots__ = ()

    def __new__(cls, high: _PointLike, low: _PointLike) -> typing.Self:
        return super().__new__(cls, (Point(*high), Point(*low)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]!r}, {self[1]!r})"

    @property
    def high(self) -> Point:
        return self[0]

    @property
    def low(self) -> Point:
        return self[1]


class Line(tuple[float, float, float]):
    """The infinite line ``Ax + By + C = 0``."""

    __slots__ = ()

    def __new__(cls, A: float, B: float, C: float) -> typing.Self:
        return super().__new__(cls, (float(A), float(B), float(C)))

    @property
    def A(self) -> float:
        return self[0]

    @property
    def B(self) -> float:
        return self[1]

    @property
    def C(self) -> float:
        return self[2]


class LineSegment(tuple[Point, Point]):
    """A line segment between ``p1`` and ``p2``."""

    __slots__ = ()

    def __new__(cls, p1: _PointLike, p2: _PointLike) -> typing.Self:
        return super().__new__(cls, (Point(*p1), Point(*p2)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]!r}, {self[1]!r})"

    @property
    def p1(self) -> Point:
        return self[0]

    @property
    def p2(self) -> Point:
        return self[1]


class Path:
    """An open or closed path through ``points``."""

    __slots__ = ("_is_closed", "points")

    def __init__(self, *points: _PointLike, is_closed: bool = False) -> None:
        self.points = tuple(Point(*p) for p in points)
        self._is_closed = is_closed

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Path):
            return NotImplemented
        return self.points == other.points and self._is_closed == other._is_closed

    def __hash__(self) -> int:
        return hash((self.points, self.is_closed))

    def __iter__(self) -> Iterator[Point]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> Point:
        return self.points[i]

    def __contains__(self, point: object) -> bool:
        return point in self.points

    def __repr__(self) -> str:
        points = ", ".join(map(repr, self.points))
        return f"{type(self).__name__}({points}, is_closed={self._is_closed})"


class Polygon(Path):
    """A polygon with vertices ``points`` (always closed)."""

    __slots__ = ()

    def __init__(self, *points: _PointLike) -> None:
        super().__init__(*points, is_closed=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.points))})"


class Circle(tuple[Point, float]):
    """A circle with a ``center`` point and a ``radius``."""

    __slots__ = ()

    def __new__(cls, center: _PointLike, radius: float) -> typing.Self:
        return super().__new__(cls, (Point(*center), float(radius)))

    @property
    def center(self) -> Point:
        return self[0]

    @property
    def radius(self) -> float:
        return self[1]
