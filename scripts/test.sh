#!/usr/bin/env bash
# The whole test suite: lints, Rust unit tests, and the pytest suite against a throwaway
# PostgreSQL under every event loop. Set ASYNCPG_RS_TEST_DSN to use an external server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test"
cargo test --quiet
echo "== ruff"
.venv/bin/ruff check asyncpg_rs tests tools benchmarks examples
echo "== stubtest"
# the stubs must match the modules they describe (a mismatch fails the run); the allowlist
# says why each of its entries is right as it is (unused entries are fine: they depend on
# the Python version's typeshed)
.venv/bin/python -m mypy.stubtest asyncpg_rs._native asyncpg_rs.eventloop._streams \
    asyncpg_rs.eventloop._sockets asyncpg_rs.eventloop._datagram asyncpg_rs.eventloop._processes \
    --allowlist scripts/stubtest_allowlist.txt --ignore-unused-allowlist
echo "== pytest"
# exit status 5 (no tests collected) is non-zero too, so `set -e` fails the run on it
.venv/bin/python -m pytest tests/ -q --timeout=300 "$@"
echo "== wheel: build, install without Rust, run the demo and a smoke test"
bash scripts/wheel_check.sh
