"""asyncpg_rs: an asyncpg-compatible PostgreSQL driver for asyncio, with its own Rust event loop.

``import asyncpg_rs as asyncpg`` gives asyncpg's API: :func:`connect`, :func:`create_pool`,
:class:`Connection`, :class:`Record`, the exception classes and the ``types`` module.
"""

import typing as _typing_module
from types import ModuleType as _ModuleType

from . import _alias, _native  # noqa: F401  (_native: load the compiled core first)
from . import exceptions as exceptions
from . import types as types

# ``X as X``: the names are re-exported for type checkers too (mypy's no_implicit_reexport)
from .connection import Connection as Connection
from .connection import connect as connect
from .eventloop import EventLoopPolicy as EventLoopPolicy
from .eventloop import Loop as Loop
from .eventloop import install as install
from .eventloop import new_event_loop as new_event_loop
from .eventloop import run as run
from .exceptions import *  # noqa: F401,F403
from .pool import Pool as Pool
from .pool import create_pool as create_pool
from .prepared_stmt import PreparedStatement as PreparedStatement
from .protocol import Record as Record
from .types import *  # noqa: F401,F403

# The asyncpg release whose API this package implements, not asyncpg_rs's own version (that is
# the distribution's: importlib.metadata.version("asyncpg_rs")). Code written for asyncpg reads
# asyncpg.__version__ to decide what it may use: Sentry's and Datadog's integrations refuse to
# instrument an asyncpg older than 0.23, so the package's own 0.1.0 here would turn them off.
__version__ = "0.32.0"

__all__ = (
    ("connect", "create_pool", "Pool", "Connection", "PreparedStatement", "Record")
    + ("Loop", "new_event_loop", "run", "EventLoopPolicy", "install")
    + exceptions.__all__  # noqa: F405
    + types.__all__  # noqa: F405
)


_alias.install()
_resolving: set[str] = set()


def _alias_getattr(name: str) -> _ModuleType:
    # An application may alias this package (``sys.modules["asyncpg"] = asyncpg_rs``). Then
    # ``from asyncpg import sub`` asks this module for ``sub``; resolve such a name through the
    # alias, so that import hooks serving the ``asyncpg.*`` namespace apply.
    if not name.startswith("__") and name not in _resolving:
        import importlib
        import sys

        me = sys.modules.get(__name__)
        _resolving.add(name)
        try:
            for alias, module in list(sys.modules.items()):
                if module is me and alias != __name__ and "." not in alias:
                    try:
                        return importlib.import_module(f"{alias}.{name}")
                    except ImportError:
                        continue
        finally:
            _resolving.discard(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _typing_module.TYPE_CHECKING:
    # hidden from type checkers: to them a module __getattr__ would make every misspelt
    # name an attribute
    __getattr__ = _alias_getattr
