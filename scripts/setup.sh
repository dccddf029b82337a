#!/usr/bin/env bash
# Install what is missing on a Debian/Ubuntu machine and build asyncpg_rs into .venv.
# Idempotent: a second run only rebuilds. Fails loudly on anything it cannot do.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

have_pg_server() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
    [ -n "${PGBIN:-}" ] && [ -x "$PGBIN/initdb" ] && return 0
    command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
    return 1
}

packages=()
have_pg_server || packages+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
# tests/test_topology.py puts PgBouncer in front of the throwaway cluster
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)
command -v cc >/dev/null 2>&1 || packages+=(build-essential)
command -v setpriv >/dev/null 2>&1 || packages+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    # the server must not run as root; Debian's postgresql package creates this user
    packages+=(postgresql)
fi
if [ ${#packages[@]} -gt 0 ]; then
    log "installing Debian packages: ${packages[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    # rustup installs into ~/.cargo without touching PATH of non-login shells
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || {
    echo "setup: cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
}

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
log "installing Python build and test dependencies"
.venv/bin/pip install -q maturin pytest pytest-timeout uvloop hypothesis "asyncpg==0.32.0" ruff \
    "mypy==2.4.1"
# libraries written for asyncpg, run unchanged over asyncpg_rs by tests/compat (pinned: the
# tests compare their observations with the real asyncpg's)
.venv/bin/pip install -q "sqlalchemy[asyncio]==2.1.9" "databases==0.9.0" "tortoise-orm==1.1.9" \
    "piccolo==1.38.0" "opentelemetry-sdk==1.45.1" "opentelemetry-instrumentation-asyncpg==0.66b1"
# APM agents, run over asyncpg_rs aliased as asyncpg and compared with the real asyncpg's
# spans by tests/compat (scenarios/apm_*.py); their transports are kept in memory
.venv/bin/pip install -q "sentry-sdk==2.75.0" "ddtrace==4.16.0" "newrelic==14.1.0" \
    "elastic-apm==6.26.2"
# applications on the event loop (tests/loop/test_applications.py)
.venv/bin/pip install -q "aiohttp==3.14.5" "uvicorn==0.54.0" "starlette==1.10.0" "httpx==0.28.1" \
    "gunicorn==27.0.1" "uvicorn-worker==0.4.0" "hypercorn==0.18.0"
# psycopg 3, the third driver in benchmarks/driver_bench.py (binary, prepared statements)
.venv/bin/pip install -q "psycopg[binary]==3.3.9"
log "building asyncpg_rs (release)"
.venv/bin/maturin develop --release -q
