"""The chaos soak, 3 minutes of it (bench/soak.py; docs/benchmarks.md, "Chaos soak"): four pipelines loop and a
client streams predictions while a random service or the S3 server is SIGKILLed and restarted every 10-40 s.
Every target must hold: runs end SUCCEEDED (or are retried to success), nothing lost, duplicated or orphaned
in the store, every checksum matches, every prediction answered within the retry window.

Marked `soak`: `pytest -m soak` runs just this."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

MINUTES = 3


@pytest.mark.soak
def test_chaos_soak_meets_every_target(tmp_path):
    figures = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "soak.py"), "--minutes", str(MINUTES), "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    print(done.stdout, done.stderr[-5000:])  # the printout, shown when the test fails
    result = json.loads(figures.read_text())
    assert sum(result["kills"].values()) >= MINUTES * 60 // 40  # the chaos happened
    assert result["runs"]["started"] >= 4 and result["runs"].get("SUCCEEDED", 0) >= 4
    assert result["predictions"]["answered"] > 0
    assert {what for what, met in result["targets"].items() if not met} == set()
    assert done.returncode == 0
