"""Real ASGI servers serving a Starlette app on asyncpg_rs's loop, with an asyncpg_rs pool.

Each test starts the server as a user would (the command lines are the README's), on a free
port on 127.0.0.1, against the throwaway PostgreSQL; sends requests with httpx; checks that
the requests ran on asyncpg_rs's loop and reached the database; stops the server with
SIGTERM; and checks that the lifespan shutdown ran on that loop and closed the pool.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
LOOP_MODULE = "asyncpg_rs.eventloop"

SERVERS = {
    "uvicorn-cli": lambda port: [
        f"{BIN}/uvicorn", "--loop", "asyncpg_rs:new_event_loop",
        "--host", "127.0.0.1", "--port", str(port), "app:app",
    ],
    "uvicorn-config": lambda port: [
        sys.executable, "serve_programmatic.py", "uvicorn-config", str(port),
    ],
    "gunicorn-uvicorn-worker": lambda port: [
        f"{BIN}/gunicorn", "-k", "asyncpg_rs.uvicorn_worker.UvicornWorker",
        "-w", "2", "-b", f"127.0.0.1:{port}", "--no-control-socket", "app:app",
    ],
    "hypercorn-cli": lambda port: [
        f"{BIN}/hypercorn", "--worker-class", "asyncio", "-b", f"127.0.0.1:{port}",
        "app_installed:app",
    ],
    "hypercorn-serve": lambda port: [
        sys.executable, "serve_programmatic.py", "hypercorn", str(port),
    ],
}  # fmt: skip


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(proc, url, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=1.0)
            return True
        except httpx.TransportError:
            time.sleep(0.1)
    return False


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_server_serves_on_our_loop(pg, tmp_path, server):
    port = _free_port()
    report = tmp_path / "lifespan.json"
    env = dict(os.environ, SERVER_TEST_DSN=pg.dsn(), SERVER_TEST_REPORT=str(report))
    env["PYTHONPATH"] = os.pathsep.join([HERE, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        SERVERS[server](port),
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert _wait_until_serving(proc, f"{base}/loop", time.monotonic() + 60), "never served"
        with httpx.Client(base_url=base, timeout=10.0) as client:
            for _ in range(6):  # several, so both gunicorn workers likely take some
                assert client.get("/loop").json() == {"loop": LOOP_MODULE}
                assert client.get("/db").json() == {"value": 42, "loop": LOOP_MODULE}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            pytest.fail(f"{server} did not stop on SIGTERM:\n{output[-3000:]}")
    assert proc.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert report.exists(), f"the lifespan shutdown did not run:\n{output[-3000:]}"
    closed = json.loads(report.read_text())
    assert closed == {
        "started_on": LOOP_MODULE,
        "closed_on": LOOP_MODULE,
        "pool_closing": True,
        "pool_size": 0,
    }, output[-3000:]
