"""A few seconds of property-based fuzzing of the protocol core (``tools/fuzz_protocol.py``).

Framing, dispatch and every builtin decoder get generated and mutated server answers
through ``PGProtocol``'s Python face; no panic, nothing raised out of ``data_received``, only
the driver's exception classes, no hang. It runs in a child process under a 1 GiB
address-space limit, so an input that sizes an allocation from the wire fails the test
rather than the machine. Longer runs: ``.venv/bin/python tools/fuzz_protocol.py --seconds 600``.
"""

import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY = 1 << 30


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def test_protocol_fuzz_short_run(tmp_path):
    proc = subprocess.run(
        # the PRNG engine with a fixed seed: each run covers a prefix of the same examples
        [
            sys.executable,
            os.path.join(ROOT, "tools", "fuzz_protocol.py"),
            "--seconds",
            "4",
            "--engine",
            "random",
            "--seed",
            "20261202",
            "--example-file",
            os.path.join(tmp_path, "example.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_memory,
        cwd=ROOT,
    )
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert " findings=0 " in proc.stdout, report
    executions = int(proc.stdout.split("executions=")[1].split()[0])
    assert executions > 0, report
