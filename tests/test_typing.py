"""The typed surface: ``mypy --strict`` on examples/typed_usage.py, mistakes it must catch, and
the example run against the server so that what it asserts stays true.

mypy sees asyncpg_rs the way an application does (``--follow-imports=silent``: the package's
annotations are used, its bodies are not reported on).
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "typed_usage.py")
ANY_BY_DESIGN = ("# Any: a column value", "# Any: constructor")

pytest.importorskip("mypy", reason="mypy is installed by scripts/setup.sh")


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mypy_cache"))


def run_mypy(cache_dir, path, *flags):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
        + ["--cache-dir", cache_dir, "--no-error-summary", "--show-error-codes", *flags, path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    return proc.returncode, errors, proc.stdout + proc.stderr


def test_example_passes_mypy_strict(mypy_cache):
    rc, errors, output = run_mypy(mypy_cache, EXAMPLE)
    assert rc == 0 and not errors, output


def test_example_leaks_any_only_where_a_column_value_is_any(mypy_cache):
    rc, errors, output = run_mypy(mypy_cache, EXAMPLE, "--disallow-any-expr")
    with open(EXAMPLE) as f:
        allowed = {n for n, line in enumerate(f, 1) if line.rstrip().endswith(ANY_BY_DESIGN)}
    reported = {int(re.match(r"[^:]+:(\d+):", e).group(1)) for e in errors}
    assert rc == 1, output  # the column values are Any: the flag must see them
    assert reported <= allowed, output
    # every marked line still yields Any: a marker cannot hide a line that became typed
    assert reported == allowed, output


MISTAKES = """\
import asyncpg_rs


class Book(asyncpg_rs.Record):
    pass


async def misuse(con: asyncpg_rs.Connection, pool: asyncpg_rs.Pool) -> None:
    await con.fetch(42)  # E1
    row = await con.fetchrow("SELECT 1")
    row["x"]  # E2
    books = await con.fetch("SELECT 1", record_class=Book)
    title: str = books[0]  # E3
    await con.fetch("SELECT 1", record_class=int)  # E4
    await con.execute("SELECT 1", timeout="soon")  # E5
    con.transaction(isolation="sometimes")  # E6
    async with pool.acquire() as c:
        await c.fetchrow(b"SELECT 1")  # E7
    stmt = await con.prepare("SELECT 1", record_class=Book)
    rec: Book = (await stmt.fetch())[0]
    other: int = await stmt.fetchrow()  # E8
    cur = await con.cursor("SELECT 1")
    await cur.forward("2")  # E9
    asyncpg_rs.run(con.close).x  # E10
    await con.copy_from_table("t", output=None)  # E11
    con.no_such_method()  # E12
    asyncpg_rs.no_such_name  # E13
    loop = asyncpg_rs.new_event_loop()
    loop.call_soon(takes_int, "1")  # E14
    loop.run_in_executor(None, takes_int)  # E15


def takes_int(n: int) -> None:
    pass
"""


def test_mypy_rejects_misuse(mypy_cache, tmp_path):
    path = tmp_path / "mistakes.py"
    path.write_text(textwrap.dedent(MISTAKES))
    rc, errors, output = run_mypy(mypy_cache, str(path))
    assert rc == 1, output
    expected = {
        n: marker.split("# ")[1]
        for n, marker in enumerate(MISTAKES.splitlines(), 1)
        if re.search(r"# E\d+$", marker)
    }
    flagged = {int(re.match(r"[^:]+:(\d+):", e).group(1)) for e in errors}
    missed = {expected[n] for n in expected if n not in flagged}
    assert not missed, f"mypy accepted {sorted(missed)}:\n{output}"
    unexpected = flagged - set(expected)
    assert not unexpected, output


def test_example_runs_against_the_server(pg):
    proc = subprocess.run(
        [sys.executable, EXAMPLE, pg.dsn()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("typed usage: ok"), proc.stdout
