"""Python types for PostgreSQL values (placeholder until the type-system work lands)."""

import typing

from .serverversion import ServerVersion

__all__ = ("Type", "Attribute", "ServerVersion")


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
