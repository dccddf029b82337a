# scratch stand-in, NOT committed
import collections
from . import _native
Config = collections.namedtuple('Config', 'command_timeout statement_cache_size max_cached_statement_lifetime max_cacheable_statement_size')
async def _connect(*, loop, connection_class, record_class, dsn=None, host=None, port=None, user=None, password=None, database=None, server_settings=None, command_timeout=None, statement_cache_size=100, max_cached_statement_lifetime=300, max_cacheable_statement_size=15360, **kw):
    proto = _native.PGProtocol(loop, user or 'postgres', database or 'postgres', password, server_settings or {})
    tr, _ = await loop.create_connection(lambda: proto, host or '127.0.0.1', port or 55432)
    await proto.startup_waiter()
    cfg = Config(command_timeout, statement_cache_size, max_cached_statement_lifetime, max_cacheable_statement_size)
    return connection_class(proto, tr, loop, (host, port), cfg, None)
async def _cancel(*, loop, addr, params, backend_pid, backend_secret):
    import struct, asyncio
    r, w = await asyncio.open_connection(addr[0] or '127.0.0.1', addr[1] or 55432)
    w.write(struct.pack('!iiii', 16, 80877102, backend_pid, backend_secret)); await w.drain(); w.close()
