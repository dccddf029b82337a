"""Loop tests: one body, run on the stdlib loop and on asyncpg_rs's loop; both must pass.

Async tests carry ``looptools.LOOP_TEST_MARKS`` (they run on our loop even before it has
transports); synchronous tests take the ``loop`` fixture, a fresh loop of each kind.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import pytest
from looptools import LOOP_KINDS

import asyncpg_rs


@pytest.fixture(params=list(LOOP_KINDS))
def loop(request):
    """A fresh event loop of each kind, closed after the test."""
    lp = LOOP_KINDS[request.param]()
    yield lp
    if not lp.is_closed():
        if not lp.is_running():
            lp.run_until_complete(lp.shutdown_asyncgens())
        lp.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def loop_kind(loop):
    return "asyncpg_rs" if isinstance(loop, asyncpg_rs.Loop) else "asyncio"


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory):
    """A directory with a self-signed CA (ca.pem) and a server certificate for 'localhost'
    signed by it (server.pem, server.key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed for the TLS tests (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    # the extensions Python 3.13's strict X.509 verification asks of a CA and a leaf
    ca_ext = (
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    )
    run(
        *f"req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=testCA {ca_ext}".split(),
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run(
        *"req -newkey rsa:2048 -nodes -subj /CN=localhost".split(),
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    run(
        *"x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2".split(),
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    )
    return d


@pytest.fixture(scope="session")
def certs(certs_dir):
    """(server context, client context) for the certificates of ``certs_dir``."""
    d = certs_dir
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(d / "server.pem", d / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    return server_ctx, client_ctx
