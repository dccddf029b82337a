"""asyncpg_rs: an asyncpg-compatible PostgreSQL driver for asyncio, with its own Rust event loop."""

from . import _native  # noqa: F401

__version__ = "0.1.0"
