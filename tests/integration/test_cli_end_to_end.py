"""The CLI end to end in real processes: MLflow and Delta filled, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def fedlake(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "fedlake.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=ENV,
    )


def config(tmp_path, *, rounds=4, name="e2e", epochs=1):
    p = tmp_path / f"{name}.toml"
    p.write_text(f"""
name = "{name}"
seed = 3
output_dir = "{tmp_path / "runs"}"
[data]
scenario = "digits"
num_clients = 8
[model]
kind = "logreg"
[algorithm]
client_lr = 0.05
local_epochs = {epochs}
batch_size = 16
[federation]
rounds = {rounds}
clients_per_round = 4
[lakehouse]
catalog = "main"
schema = "e2e"
model_name = "digits_e2e"
""")
    return p


def test_run_fills_mlflow_and_delta_and_report(tmp_path, monkeypatch):
    proc = fedlake("run", "--config", str(config(tmp_path)), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "e2e"
    assert "registered model" in proc.stdout and "Delta tables" in proc.stdout

    # Delta tables, Unity Catalog layout: <root>/<catalog>/<schema>/<table>
    from deltalake import DeltaTable

    lake = run_dir / "lakehouse" / "main" / "e2e"

    def rows(table, key):  # Delta has no row order: sort by a column
        return sorted(DeltaTable(str(lake / table)).to_pyarrow_table().to_pylist(), key=key)

    rounds = rows("rounds", lambda r: r["round"])
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert all(r["status"] == "completed" and r["num_completed"] == 4 for r in rounds)
    updates = DeltaTable(str(lake / "client_updates")).to_pyarrow_table().to_pylist()
    assert len(updates) == 16 and "params" not in updates[0]
    models = rows("models", lambda r: r["round"])
    assert len(models) == 4
    last = np.frombuffer(models[-1]["params"], dtype=np.float32)
    assert last.size == 64 * 10 + 10
    audit = rows("audit", lambda r: r["time"])
    assert [a["action"] for a in audit] == ["run.start", "run.finish"]

    # MLflow: params, per-round metrics, artifacts, registered model with alias
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("fedlake")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["federation.rounds"] == "4"
    hist = client.get_metric_history(run.info.run_id, "eval_accuracy")
    assert sorted(m.step for m in hist) == [1, 2, 3, 4]
    assert max(m.value for m in hist) > 0.5
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.png", "history.json"} <= arts
    mv = client.get_model_version_by_alias("digits_e2e", "champion")
    best = max(hist, key=lambda m: m.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # no global state, no ./mlflow.db
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model("models:/digits_e2e@champion")
    from fedlake.data.tabular import load_digits_xy

    x, y = load_digits_xy()
    # the signature takes float64 rows (the numpy and Spark default)
    acc = float((np.asarray(model.predict(x[:300].astype(np.float64))) == y[:300]).mean())
    assert acc > 0.5 and str(mv.version) == "1"
    assert best.value > 0.5

    # report command
    rep = fedlake("report", str(run_dir), "--out", str(tmp_path / "r.png"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best" in rep.stdout.lower()


def _final_params(run_dir: Path) -> bytes:
    from fedlake.orchestration.checkpoint import load_checkpoint

    return load_checkpoint(run_dir).state.params.tobytes()


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    rounds, epochs = 30, 25  # enough local work per round that the kill lands mid-run
    full = fedlake(
        "run",
        "--config",
        str(config(tmp_path, rounds=rounds, name="full", epochs=epochs)),
        "-q",
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert full.returncode == 0, full.stderr

    cfg = config(tmp_path, rounds=rounds, name="killed", epochs=epochs)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedlake.cli.main",
            "run",
            "--config",
            str(cfg),
            "-q",
            "--no-mlflow",
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tmp_path / "runs" / "killed"
    deadline = time.time() + 300
    from fedlake.orchestration.checkpoint import load_checkpoint

    while time.time() < deadline:
        try:
            ck = load_checkpoint(run_dir)
        except Exception:  # mid-rename on some filesystems; try again
            ck = None
        if ck is not None and ck.state.round >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stopped_at = load_checkpoint(run_dir).state.round
    assert 3 <= stopped_at < rounds, "the run finished before it could be killed"

    res = fedlake("run", "--config", str(cfg), "-q", "--no-mlflow", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _final_params(run_dir) == _final_params(tmp_path / "runs" / "full")
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["round"] for h in history] == list(range(1, rounds + 1))
    from deltalake import DeltaTable

    rows = DeltaTable(str(run_dir / "lakehouse" / "main" / "e2e" / "rounds")).to_pyarrow_table()
    assert sorted(rows.column("round").to_pylist()) == list(range(1, rounds + 1))


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = config(tmp_path, rounds=2, name="chg")
    assert (
        fedlake(
            "run", "--config", str(cfg), "-q", "--no-mlflow", "--no-delta", cwd=tmp_path
        ).returncode
        == 0
    )
    res = fedlake(
        "run",
        "--config",
        str(cfg),
        "-q",
        "--no-mlflow",
        "--no-delta",
        "--resume",
        "--seed",
        "9",
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "seed differs" in res.stderr
    assert res.stderr.startswith("error: resume:")
    more = fedlake(
        "run",
        "--config",
        str(cfg),
        "-q",
        "--no-mlflow",
        "--no-delta",
        "--resume",
        "--rounds",
        "3",
        "--executor",
        "process",
        cwd=tmp_path,
    )
    assert more.returncode == 0, more.stderr
    assert "continuing a run that stopped (max_rounds) after 2 rounds" in more.stderr
    history = json.loads((tmp_path / "runs" / "chg" / "history.json").read_text())
    assert [h["round"] for h in history] == [1, 2, 3]
    assert (
        json.loads((tmp_path / "runs" / "chg" / "config.json").read_text())["federation"]["rounds"]
        == 3
    )


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    cfg = config(tmp_path, name="none")
    res = fedlake("run", "--config", str(cfg), "-q", "--resume", cwd=tmp_path)
    assert res.returncode == 2
    assert (
        res.stderr.startswith("error: resume: nothing to resume") and "Traceback" not in res.stderr
    )
    run_dir = tmp_path / "runs" / "none"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")  # killed before its first round was saved
    res = fedlake("run", "--config", str(cfg), "-q", "--resume", cwd=tmp_path)
    assert res.returncode == 2 and "has no completed round yet" in res.stderr
