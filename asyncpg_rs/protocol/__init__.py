"""The protocol layer's Python names, at asyncpg's module paths (``asyncpg.protocol.Record``)."""

from .record import Record

__all__ = ("Record",)
