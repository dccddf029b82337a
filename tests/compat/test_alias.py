"""``sys.modules["asyncpg"] = asyncpg_rs`` makes asyncpg's module paths name our modules.

Run in a fresh interpreter: the alias has to be set before anything imports asyncpg.
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, uuid
import asyncpg_rs
sys.modules["asyncpg"] = asyncpg_rs
import asyncpg.connection, asyncpg.pool, asyncpg.cursor, asyncpg.prepared_stmt
import asyncpg.exceptions
from asyncpg import transaction
from asyncpg.pgproto.pgproto import UUID
from asyncpg.pgproto import types as pgtypes

# one module object per submodule: patching by module path patches what the driver uses
assert asyncpg.connection is asyncpg_rs.connection, asyncpg.connection
assert asyncpg.connection.Connection is asyncpg_rs.Connection
assert asyncpg.pool.Pool is asyncpg_rs.Pool
assert asyncpg.cursor is sys.modules["asyncpg_rs.cursor"]
assert asyncpg.prepared_stmt.PreparedStatement is asyncpg_rs.PreparedStatement
assert asyncpg.exceptions.DataError is asyncpg_rs.DataError
assert transaction is sys.modules["asyncpg_rs.transaction"]
assert isinstance(uuid.uuid4(), UUID)
assert pgtypes.Point is asyncpg_rs.types.Point
for missing in ("asyncpg.no_such_module", "asyncpg.no_such_package.sub"):
    try:
        __import__(missing)
    except ModuleNotFoundError as e:
        assert missing.split(".")[1] in str(e), e
    else:
        raise AssertionError(f"{missing} imported")
print("ok")
"""


def test_alias_gives_the_same_modules():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
