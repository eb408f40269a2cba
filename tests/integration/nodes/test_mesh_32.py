"""Thirty-two real `llmnode start` processes on 127.0.0.1 joining from one seed, through
benchmarks/mesh32.py (real sockets, real processes): membership, detection, real bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[3]


def test_thirty_two_nodes_converge_detect_three_kills_and_send_what_the_simulation_says() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mesh32.py"), "--join-timeout", "90"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result))  # the figures, for -s
    assert result["full_membership_s"] is not None, "never did all 32 see all 32 alive"
    # Issue 18 asks for 10 s after the last start (a timed target: benchmarks/mesh32.py reports
    # it; 8.5 s on the shared 2-core machine, most of it 31 Python processes starting). Here
    # only a loose bound: a join storm must not wait for the periodic push-pull again.
    assert result["full_after_all_up_s"] <= 60
    assert result["detection_s"] is not None
    assert result["detection_s"] <= result["detection_bound_s"]
    # It caught a real regression: memory for models (placement) follows free RAM, and every
    # change re-signed the record (7.2x the simulated bytes) until it was gossiped by bands.
    assert 0.5 <= result["real_vs_simulated"] <= 2.0
