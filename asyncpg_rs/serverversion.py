"""Parsing of the server's ``server_version`` string into a :class:`ServerVersion`."""

from __future__ import annotations

import re
import typing

__all__ = ("ServerVersion", "split_server_version_string")


class ServerVersion(typing.NamedTuple):
    """PostgreSQL server version as ``(major, minor, micro, releaselevel, serial)``."""

    major: int
    minor: int
    micro: int
    releaselevel: str
    serial: int


_VERSION = re.compile(
    r"^\s*(?:[A-Za-z][\w-]*\s+)?(?P<nums>\d+(?:\.\d+)*)"
    r"(?:(?P<level>devel|alpha|beta|rc)(?P<serial>\d+)?)?"
)


def split_server_version_string(version_string: str) -> ServerVersion:
    """Turn e.g. ``'15.18 (Debian 15.18-0+deb12u1)'`` or ``'17beta2'`` into a ServerVersion.

    From PostgreSQL 10 on, ``X.Y`` means release Y of major X; it is reported as
    ``(X, 0, Y)`` so that ``micro`` keeps meaning "bug-fix release" across the scheme change,
    as asyncpg does.
    """
    m = _VERSION.match(version_string)
    if m is None:
        raise ValueError(f"unable to parse PostgreSQL version: {version_string!r}")
    nums = [int(p) for p in m.group("nums").split(".")]
    level = m.group("level") or "final"
    serial = int(m.group("serial") or 0)
    major = nums[0]
    if major >= 10:
        minor = 0
        micro = nums[1] if len(nums) > 1 else 0
    else:
        minor = nums[1] if len(nums) > 1 else 0
        micro = nums[2] if len(nums) > 2 else 0
    return ServerVersion(major, minor, micro, level, serial)
