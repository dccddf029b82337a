"""``asyncpg.pgproto.pgproto``'s public names.

``UUID`` is the class of the UUID values the driver returns. asyncpg has its own subclass of
:class:`uuid.UUID` there; asyncpg_rs returns :class:`uuid.UUID` itself, so that is what
``UUID`` names: ``isinstance(value, UUID)`` holds for every UUID a query gives.
"""

from __future__ import annotations

import uuid

UUID = uuid.UUID

__all__ = ("UUID",)
