"""The protocol layer's Python names, at asyncpg's module paths (``asyncpg.protocol.Record``,
``asyncpg.protocol.Protocol``)."""

from .protocol import Protocol
from .record import Record

__all__ = ("Protocol", "Record")
