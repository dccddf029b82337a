"""asyncpg_rs: an asyncpg-compatible PostgreSQL driver for asyncio, with its own Rust event loop.

``import asyncpg_rs as asyncpg`` gives asyncpg's API: :func:`connect`, :func:`create_pool`,
:class:`Connection`, :class:`Record`, the exception classes and the ``types`` module.
"""

from . import _native  # noqa: F401  (load the compiled core first)
from .connection import Connection, connect  # noqa: F401
from .exceptions import *  # noqa: F401,F403
from .prepared_stmt import PreparedStatement  # noqa: F401
from .protocol import Record  # noqa: F401

__version__ = "0.1.0"

__all__ = ("connect", "Connection", "PreparedStatement", "Record") + exceptions.__all__  # noqa: F405
