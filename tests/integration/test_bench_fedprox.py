"""bench/fedprox_synthetic.py still runs (--quick), and its round-by-round tracing is exact."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def bench_module(monkeypatch):
    threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    for var in (*threads, "FEDLAKE_CLIENT_THREADS"):
        monkeypatch.setenv(var, "1")  # the script pins them on import: restored afterwards
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # its helpers, as when run as a script
    spec = importlib.util.spec_from_file_location(
        "fedprox_bench", ROOT / "bench/fedprox_synthetic.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fedprox_bench_quick_runs_both_policies(tmp_path):
    out, png = tmp_path / "fedprox.json", tmp_path / "fedprox.png"
    cmd = [sys.executable, "bench/fedprox_synthetic.py", "--quick", "--output", str(out)]
    proc = subprocess.run(
        [*cmd, "--plot", str(png)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Finding 1" in proc.stdout and "Finding 2" in proc.stdout
    report = json.loads(out.read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"FedAvg", "FedProx mu=1"}
    # 50% of 10 clients straggle: FedAvg drops them, FedProx keeps their partial work
    assert rows["FedAvg"]["mean_updates_per_round"] == 5
    assert rows["FedProx mu=1"]["mean_updates_per_round"] == 10
    for r in rows.values():
        assert r["rounds_done"] == 5 and r["stop_reason"] == "max_rounds"
        assert 0 <= r["test_accuracy"] <= 1
        curve = r["train_loss_curve"]  # rounds 0 and 5; zero params start at ln 10
        assert len(curve) == 2 and curve[0] == pytest.approx(math.log(10), abs=1e-4)
        assert curve[-1] == pytest.approx(r["final_train_loss"], abs=1e-5)
        assert r["final_train_loss"] < curve[0]
    assert report["code"]["head"] and png.stat().st_size > 0


def test_round_by_round_tracing_equals_one_uninterrupted_run(tmp_path, monkeypatch):
    bench = bench_module(monkeypatch)
    job = {
        "dataset": "Synthetic(0.5,0.5)",
        "stragglers": 0.5,
        "method": "FedProx mu=0",
        "seed": 1,
        "rounds": 4,
        "local_epochs": 2,
    }
    traced, losses = bench.trace(job, tmp_path / "traced")
    fed = bench.federation(job, tmp_path / "whole", bench.data_of(job["dataset"]))
    whole = fed.run()
    assert traced.state.params.tobytes() == whole.state.params.tobytes()
    assert [h["cohort"] for h in traced.history] == [h["cohort"] for h in whole.history]
    assert [h["eval_accuracy"] for h in traced.history] == [
        h["eval_accuracy"] for h in whole.history
    ]
    assert len(losses) == 5
