# Type checkers' view of the mixin: create_datagram_endpoint is asyncio.BaseEventLoop's,
# with its signature (the .py implements it unannotated; the loop tests check the behaviour).
import asyncio

from .._native import DatagramTransport as DatagramTransport

class DatagramMethods(asyncio.BaseEventLoop): ...
