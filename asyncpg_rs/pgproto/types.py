"""``asyncpg.pgproto.types``: the geometric and bit string types (the same classes as
:mod:`asyncpg_rs.types`)."""

from __future__ import annotations

from ..types import BitString, Box, Circle, Line, LineSegment, Path, Point, Polygon

__all__ = ("BitString", "Point", "Path", "Polygon", "Box", "Line", "LineSegment", "Circle")
