"""Objects bound to a connection (prepared statements, cursors) check it before each call.

As in asyncpg the check runs when the method is called, not when the coroutine it returns is
awaited: ``stmt.fetch()`` on a statement whose pooled connection went back to the pool raises
at once.
"""

from __future__ import annotations

import functools
import typing

from . import exceptions

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    _S = typing.TypeVar("_S")
    _P = typing.ParamSpec("_P")
    _R = typing.TypeVar("_R")


def check_connection(resource: typing.Any, meth: str) -> None:
    """Raise ``InterfaceError`` if ``resource``'s connection was released or closed."""
    con = resource._connection
    name = type(resource).__name__
    if con._session.release_ctr != resource._release_ctr:
        raise exceptions.InterfaceError(
            f"cannot call {name}.{meth}(): the underlying connection has been released back "
            "to the pool"
        )
    if con.is_closed():
        raise exceptions.InterfaceError(
            f"cannot call {name}.{meth}(): the underlying connection is closed"
        )


def guarded(
    meth: Callable[typing.Concatenate[_S, _P], _R],
) -> Callable[typing.Concatenate[_S, _P], _R]:
    """Check the resource's connection when ``meth`` is called."""
    name = meth.__name__

    @functools.wraps(meth)
    def checked(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        check_connection(self, name)
        return meth(self, *args, **kwargs)

    return checked
