"""Quoting for the SQL the driver writes itself (LISTEN/UNLISTEN channels, COPY commands)."""

from __future__ import annotations


def quote_ident(name: object) -> str:
    """``name`` as a double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


def quote_literal(value: object) -> str:
    """``value`` as a single-quoted SQL string literal (embedded quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"
