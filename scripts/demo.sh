#!/usr/bin/env bash
# Build asyncpg_rs, start a throwaway PostgreSQL, run a short demo against it, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir="$(mktemp -d /tmp/asyncpg_rs_demo.XXXXXX)"
cleanup() { .venv/bin/python tools/pgcluster.py stop --dir "$dir" || true; }
trap cleanup EXIT
dsn="$(.venv/bin/python tools/pgcluster.py start --dir "$dir")"
echo "== throwaway PostgreSQL at $dsn"
.venv/bin/python examples/demo.py "$dsn"
