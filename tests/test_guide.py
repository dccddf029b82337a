"""Every ```python sample in docs/guide.md runs, as its own program, against the throwaway
server (``DATABASE_URL``), so the guide cannot drift from what the code does."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

GUIDE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "guide.md"
)


def _samples():
    with open(GUIDE) as f:
        text = f.read()
    samples = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        samples.append(pytest.param(m.group(1), id=f"line{line}"))
    return samples


SAMPLES = _samples()


def test_the_guide_has_its_samples():
    # a broken fence would silently drop samples from the run below
    assert len(SAMPLES) >= 9
    with open(GUIDE) as f:
        assert f.read().count("```python") == len(SAMPLES)


@pytest.mark.parametrize("source", SAMPLES)
def test_guide_sample_runs(pg, tmp_path, source):
    script = tmp_path / "sample.py"
    script.write_text(source)
    env = dict(os.environ, DATABASE_URL=pg.dsn())
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
