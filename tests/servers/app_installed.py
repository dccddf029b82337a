"""``app:app`` for ``hypercorn --worker-class asyncio``: hypercorn's asyncio worker loads the
application before it makes its loop, and makes it through the event loop policy, so a
module that installs asyncpg_rs's policy first gets the app served on asyncpg_rs's loop."""

import asyncpg_rs

asyncpg_rs.install()

from app import app  # noqa: E402

__all__ = ("app",)
