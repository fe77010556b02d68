"""A compressed run through the CLI: bytes and ratios reach Delta, MLflow and the summary."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def test_compressed_run_records_real_bytes_everywhere(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
name = "squeezed"
seed = 1
output_dir = "{tmp_path / "runs"}"
[data]
scenario = "digits"
num_clients = 8
[model]
kind = "logreg"
[algorithm]
client_lr = 0.05
batch_size = 16
[federation]
rounds = 3
clients_per_round = 4
[compression]
upload = [{{kind = "topk", ratio = 0.1}}, {{kind = "quantize", bits = 8}}]
download = [{{kind = "quantize", bits = 8, stochastic = false}}]
error_feedback = true
""")
    proc = subprocess.run(
        [sys.executable, "-m", "fedlake.cli.main", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert "uplink vs float32" in proc.stdout and "x smaller" in proc.stdout
    run_dir = tmp_path / "runs" / "squeezed"

    from deltalake import DeltaTable

    lake = run_dir / "lakehouse" / "fedlake" / "default"
    rounds = DeltaTable(str(lake / "rounds")).to_pyarrow_table().to_pylist()
    updates = DeltaTable(str(lake / "client_updates")).to_pyarrow_table().to_pylist()
    dim = 64 * 10 + 10
    for r in rounds:
        # top 10% (65 values) at 8 bits with 16-bit indices: far below 4 bytes per weight
        assert r["upload_ratio"] > 10 and r["download_ratio"] > 3.5
        sent = [u["bytes"] for u in updates if u["round"] == r["round"]]
        assert r["bytes_up"] == sum(sent)
        assert r["upload_ratio"] == pytest.approx(4 * dim * len(sent) / sum(sent))

    from mlflow import MlflowClient

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fedlake").experiment_id])
    hist = client.get_metric_history(run.info.run_id, "upload_ratio")
    assert sorted(m.step for m in hist) == [1, 2, 3]
    assert run.data.params["compression.error_feedback"] == "True"
