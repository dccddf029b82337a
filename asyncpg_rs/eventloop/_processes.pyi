# Type checkers' view of the mixin: pipes and subprocesses are asyncio.BaseEventLoop's
# methods, with its signatures (the .py implements them unannotated; the loop tests check the
# behaviour).
import asyncio

class ProcessMethods(asyncio.BaseEventLoop): ...
