# Type checkers' view of the mixin: the public methods are asyncio.BaseEventLoop's, with
# its signatures (the .py implements them unannotated; the loop tests check the behaviour).
import asyncio
from typing import Any

def check_sendfile_arguments(file: Any, offset: Any, count: Any) -> None: ...

class SocketMethods(asyncio.BaseEventLoop): ...
