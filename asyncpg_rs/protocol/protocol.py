"""asyncpg's ``asyncpg.protocol.protocol`` names that code outside the driver uses."""

from .._native import Record, create_record


def _create_record(mapping, elems):
    """A Record from a ``{name: index}`` mapping and a tuple of values."""
    return create_record(mapping, tuple(elems))


__all__ = ("Record", "_create_record")
