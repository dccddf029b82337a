"""``Record``, the row object (implemented in Rust)."""

from .._native import Record

__all__ = ("Record",)
