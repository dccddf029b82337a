#!/usr/bin/env bash
# Build the release wheel and the sdist, install the wheel into a fresh venv with no Rust
# toolchain on PATH, and run examples/demo.py and scripts/wheel_smoke.py from it against a
# throwaway PostgreSQL. Once for .venv's CPython (the build reuses its release artefacts),
# then for each other CPython 3.12/3.13 found under ~/.pyenv/versions (each a build of its
# own, in its own target dir); prints which ran.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
root="$(pwd)"
out="$(mktemp -d /tmp/asyncpg_rs_wheels.XXXXXX)"
pg="$(mktemp -d /tmp/asyncpg_rs_wheel_pg.XXXXXX)"  # its own: the server's user must own it
cleanup() { .venv/bin/python tools/pgcluster.py stop --dir "$pg" >/dev/null 2>&1 || true; rm -rf "$out"; }
trap cleanup EXIT
dsn="$(.venv/bin/python tools/pgcluster.py start --dir "$pg")"

quiet() {  # run quietly; show the output only if it fails
    "$@" >"$out/step.log" 2>&1 || { cat "$out/step.log"; return 1; }
}
quiet .venv/bin/maturin sdist -o "$out/dist"
echo "wheel check: sdist $(basename "$out"/dist/*.tar.gz) ($(du -k "$out"/dist/*.tar.gz | cut -f1) KiB)"

check_wheel() {  # check_wheel PYTHON TARGET_DIR
    local python="$1" target="$2" wheel venv
    local tag
    tag="$("$python" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
    CARGO_TARGET_DIR="$target" quiet .venv/bin/maturin build --release -i "$python" \
        -o "$out/wheels-$tag"
    wheel="$(ls "$out/wheels-$tag"/asyncpg_rs-*-cp"$tag"-*.whl)"
    echo "wheel check: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
    venv="$out/venv-$(basename "$wheel" .whl)"
    "$python" -m venv "$venv"
    # a user's machine: no cargo or rustc to fall back on, and not the checkout on sys.path
    env -i HOME="$HOME" PATH="$venv/bin:/usr/bin:/bin" PIP_DISABLE_PIP_VERSION_CHECK=1 \
        sh -c "! command -v cargo && ! command -v rustc && cd / &&
               pip install -q --no-index '$wheel' &&
               python '$root/examples/demo.py' '$dsn' >/dev/null &&
               python '$root/scripts/wheel_smoke.py' '$dsn'"
}

ran=("$(.venv/bin/python -c 'import platform; print(platform.python_version())')")
check_wheel "$root/.venv/bin/python" "$root/target"
for v in 3.12 3.13; do
    py="$(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python3 2>/dev/null | sort -V | tail -1 || true)"
    if [ -n "$py" ] && [ -x "$py" ]; then
        check_wheel "$py" "$root/target/wheel-py$v"
        ran+=("$("$py" -c 'import platform; print(platform.python_version())')")
    else
        echo "wheel check: no CPython $v on this machine, skipped"
    fi
done
echo "wheel check: ran on CPython ${ran[*]}"
