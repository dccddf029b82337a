# Type checkers' view of the mixin: connections, servers, TLS and sendfile are
# asyncio.AbstractEventLoop's methods, with its signatures (the .py implements them
# unannotated; the loop tests check the behaviour).
import asyncio
import socket

class StreamMethods(asyncio.AbstractEventLoop): ...

class Server(asyncio.AbstractServer):
    """A listening server made by ``create_server`` / ``create_unix_server``."""

    @property
    def sockets(self) -> tuple[socket.socket, ...]: ...
    def close_clients(self) -> None: ...
    def abort_clients(self) -> None: ...
