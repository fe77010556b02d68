"""bench/vs_flower_simulation.py still runs (its --quick smoke mode, without Flower's venv)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_vs_flower_bench_quick_measures_fedlake(tmp_path):
    out = tmp_path / "vs_flower.json"
    cmd = [sys.executable, "bench/vs_flower_simulation.py", "--quick", "--no-flower"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    report = json.loads(out.read_text())
    ours = report["workload"]["fedlake"]
    assert ours["rounds_run"] == report["workload"]["spec"]["rounds"]
    assert 0 <= ours["final_accuracy"] <= 1
    assert 0 < ours["rounds_s"] <= ours["wall_s"]
    assert ours["peak_rss_tree_mb"] > 0 and ours["maxrss_kb"] > 0
    assert "flower" not in report["workload"]
    assert report["verdict"]["result"] == "NOT MEASURED"
    cells = report["cohorts"]["cells"]
    assert [c["cohort"] for c in cells] == [10, 30]
    for cell in cells:
        assert cell["fedlake"]["clients_per_s"] > 0
