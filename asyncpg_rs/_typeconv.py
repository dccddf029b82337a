"""Python halves of the codecs for the rarer builtin types (network, geometry, bits, ...).

The Rust codecs parse and write the wire format; building or taking apart the Python
objects of these types is done here, where the ``ipaddress`` and ``asyncpg_rs.types``
classes live.
"""

from __future__ import annotations

import ipaddress

from . import types
from .exceptions._base import ProtocolError

_AF_INET = 2
_AF_INET6 = 3


def inet_decode(family, bits, is_cidr, addr):
    # the server only sends well-formed values; anything else is a protocol fault, not an
    # ipaddress ValueError escaping from a fetch (found by tools/fuzz_protocol.py)
    full = {_AF_INET: 32, _AF_INET6: 128}.get(family)
    if full is None or len(addr) * 8 != full or bits > full:
        raise ProtocolError(
            f"invalid inet/cidr value: family {family}, {bits} bits, {len(addr)}-byte address"
        )
    address = ipaddress.IPv4Address(addr) if full == 32 else ipaddress.IPv6Address(addr)
    if is_cidr:
        try:
            return ipaddress.ip_network(f"{address}/{bits}")
        except ValueError as e:  # host bits set: PostgreSQL's cidr input refuses those
            raise ProtocolError(f"invalid cidr value: {e}") from None
    if bits == full:
        return address
    return ipaddress.ip_interface(f"{address}/{bits}")


def inet_encode(value, cidr):
    """(family, bits, is_cidr, address bytes) of an ipaddress object or a string."""
    if isinstance(value, str):
        value = ipaddress.ip_network(value) if cidr else ipaddress.ip_interface(value)
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        address, bits = value.network_address, value.prefixlen
    elif isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        address, bits = value.ip, value.network.prefixlen
    elif isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        address, bits = value, value.max_prefixlen
    else:
        raise TypeError(f"expected an ipaddress object or str, got {type(value).__name__}")
    family = _AF_INET if address.version == 4 else _AF_INET6
    return family, bits, 1 if cidr else 0, address.packed


def macaddr_decode(data):
    return ":".join(f"{b:02x}" for b in data)


def macaddr_encode(value, size):
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    hexdigits = "".join(c for c in value if c not in ":-.")
    data = bytes.fromhex(hexdigits)
    if len(data) == 6 and size == 8:
        data = data[:3] + b"\xff\xfe" + data[3:]
    if len(data) != size:
        raise ValueError(f"invalid MAC address {value!r}")
    return data


def bits_decode(bitlength, data):
    return types.BitString.frombytes(data, bitlength)


def bits_encode(value):
    if isinstance(value, str):
        value = types.BitString(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        value = types.BitString.frombytes(bytes(value))
    if not isinstance(value, types.BitString):
        raise TypeError(f"expected a BitString or str, got {type(value).__name__}")
    return len(value), value.bytes


def geometry_decode(kind, floats, closed):
    if kind == "point":
        return types.Point(*floats)
    if kind == "line":
        return types.Line(*floats)
    if kind == "lseg":
        return types.LineSegment(floats[0:2], floats[2:4])
    if kind == "box":
        return types.Box(floats[0:2], floats[2:4])
    if kind == "circle":
        return types.Circle(floats[0:2], floats[2])
    points = [floats[i : i + 2] for i in range(0, len(floats), 2)]
    if kind == "polygon":
        return types.Polygon(*points)
    return types.Path(*points, is_closed=bool(closed))


def geometry_encode(kind, value):
    """(floats, closed flag) of a geometric value given as our types or plain sequences."""
    if kind == "point":
        return [float(value[0]), float(value[1])], 0
    if kind == "line":
        return [float(value[0]), float(value[1]), float(value[2])], 0
    if kind in ("lseg", "box"):
        a, b = value
        return [float(a[0]), float(a[1]), float(b[0]), float(b[1])], 0
    if kind == "circle":
        center, radius = value
        return [float(center[0]), float(center[1]), float(radius)], 0
    if kind == "polygon":
        closed = 1
    elif isinstance(value, tuple):
        closed = 1  # as asyncpg: a tuple of points is a closed path, a list an open one
    else:
        closed = int(bool(getattr(value, "is_closed", False)))
    floats = []
    for p in value:
        floats.extend((float(p[0]), float(p[1])))
    return floats, closed
