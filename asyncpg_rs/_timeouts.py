"""Validation of ``timeout=`` arguments, shared by the query and COPY paths."""

from __future__ import annotations


def checked_timeout(timeout):
    """A ``timeout=`` argument as asyncpg takes it: a number of seconds (not a bool) or None.

    Checked before anything is sent, so a bad value leaves the connection as it was.
    """
    if timeout is None:
        return None
    try:
        if type(timeout) is bool:
            raise ValueError
        return float(timeout)
    except (TypeError, ValueError):
        raise ValueError(
            f"invalid timeout value: expected non-negative float (got {timeout!r})"
        ) from None
