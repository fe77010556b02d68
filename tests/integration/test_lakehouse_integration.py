"""The lakehouse end to end: a small federated run written to Delta and MLflow, then served.

Two clients train a real logistic regression for a few FedAvg rounds; every
round goes to the four Delta tables and MLflow; the best model is registered
with an alias and loaded in a fresh interpreter that cannot import fedlake
(the model carries its own code).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from fedlake.core.trainer import LocalConfig
from fedlake.lakehouse import DeltaStore, MlflowTracker, plot_rounds, summary_rows
from fedlake.models.registry import build_trainer
from fedlake.orchestration.outcome import model_score

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[2] / "src")


def blobs(rng, n, shift):
    """Three Gaussian blobs in 4-D, moved by ``shift`` (a non-IID client)."""
    y = rng.integers(0, 3, size=n)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=np.float32)
    x = centres[y] + shift + rng.normal(scale=0.6, size=(n, 4)).astype(np.float32)
    return x.astype(np.float32), y


def run_federation(store, tracker, rounds=4):
    """FedAvg over two clients; returns (model_config, trainer, best params, test set)."""
    config = {"kind": "logreg", "input_shape": [4], "num_classes": 3}
    trainer = build_trainer("logreg", input_shape=(4,), num_classes=3)
    rng = np.random.default_rng(0)
    clients = {"c0": blobs(rng, 60, 0.2), "c1": blobs(rng, 40, -0.2)}
    x_test, y_test = blobs(rng, 200, 0.0)
    params = trainer.init_params(0)
    run_id = tracker.start("lake-e2e", {"algorithm": {"name": "fedavg"}, "rounds": rounds})
    store.audit(run_id, "tester", "run.start", "lake-e2e", {"rounds": rounds})
    best = (-1.0, np.inf, params)
    for r in range(1, rounds + 1):
        fits = {
            cid: trainer.fit(
                params, x, y, config=LocalConfig(epochs=1, lr=0.5), rng=np.random.default_rng(r)
            )
            for cid, (x, y) in clients.items()
        }
        weights = np.array([f.num_examples for f in fits.values()], dtype=np.float64)
        stacked = np.stack([f.params for f in fits.values()])
        params = (weights @ stacked / weights.sum()).astype(np.float32)
        ev = trainer.evaluate(params, x_test, y_test)
        train_loss = float(weights @ [f.loss for f in fits.values()] / weights.sum())
        store.append(
            "client_updates",
            [
                {
                    "run_id": run_id,
                    "round": r,
                    "attempt": 0,
                    "client_id": cid,
                    "status": "accepted",
                    "num_examples": f.num_examples,
                    "update_norm": float(np.linalg.norm(f.params - params)),
                    "bytes": f.params.nbytes,
                    "train_loss": f.loss,
                }
                for cid, f in fits.items()
            ],
        )
        round_row = {
            "run_id": run_id,
            "round": r,
            "attempt": 0,
            "status": "completed",
            "cohort": sorted(clients),
            "num_sampled": 2,
            "num_completed": 2,
            "num_dropped": 0,
            "num_failed": 0,
            "num_rejected": 0,
            "train_loss": train_loss,
            "eval_loss": ev["loss"],
            "eval_accuracy": ev["accuracy"],
            "bytes_up": int(stacked.nbytes),
            "bytes_down": 2 * params.nbytes,
            "duration_s": 0.01,
            "metrics": {"eval_examples": ev["examples"]},
        }
        store.append("rounds", [round_row])
        store.append(
            "models",
            [
                {
                    "run_id": run_id,
                    "round": r,
                    "params": params,
                    "spec": trainer.spec.to_json(),
                    "model_config": config,
                    "metrics": ev,
                    "accuracy": ev["accuracy"],
                    "loss": ev["loss"],
                }
            ],
        )
        tracker.log_metrics({"eval_accuracy": ev["accuracy"], "train_loss": train_loss}, step=r)
        if model_score(ev["accuracy"], ev["loss"]) > model_score(*best[:2]):
            best = (ev["accuracy"], ev["loss"], params)
    return config, trainer, (best[0], best[2]), (x_test, y_test)


def test_federated_run_lands_in_delta_and_mlflow_and_serves(tmp_path):
    store = DeltaStore(tmp_path / "lake", catalog="main", schema="fl")
    tracker = MlflowTracker(tmp_path / "run", experiment="lake-e2e")
    config, trainer, (best_acc, best_params), (x_test, _) = run_federation(store, tracker)
    assert best_acc > 0.8

    rounds = store.read("rounds")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert len(store.read("client_updates")) == 8 and len(store.read("models")) == 4
    assert store.read("audit")[0]["action"] == "run.start"
    for table in ("models", "rounds", "client_updates", "audit"):
        assert DeltaTable(str(tmp_path / "lake" / "main" / "fl" / table)).version() >= 0
    models = store.read("models")
    best_round = max(models, key=lambda m: model_score(m["accuracy"], m["loss"]))["round"]
    params, spec, stored_config = store.read_models_params(tracker.run_id, best_round)
    np.testing.assert_array_equal(params, best_params)
    assert stored_config == config and spec == trainer.spec.to_json()

    png = plot_rounds(rounds, tmp_path / "report.png", title="lake-e2e")
    summary = dict(summary_rows(rounds))
    assert summary["rounds run"] == "4" and summary["best accuracy"].endswith(
        f"(round {best_round})"
    )
    tracker.log_artifact(png)
    version = tracker.register_model(params, spec, stored_config, name="lake_e2e", alias="champion")
    tracker.end()

    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["algorithm.name"] == "fedavg"
    steps = tracker.client.get_metric_history(tracker.run_id, "eval_accuracy")
    assert [m.step for m in steps] == [1, 2, 3, 4]
    assert {a.path for a in tracker.client.list_artifacts(tracker.run_id)} >= {"report.png"}

    np.save(tmp_path / "x.npy", x_test.astype(np.float64))
    expected = trainer.predict(params, x_test).argmax(axis=1)
    served = serve_in_fresh_interpreter(tracker.tracking_uri, tmp_path, version)
    np.testing.assert_array_equal(served, expected)


def serve_in_fresh_interpreter(tracking_uri, tmp_path, version):
    """Load models:/lake_e2e@champion where fedlake is not importable; return its predictions."""
    code = f"""
import sys
sys.path = [p for p in sys.path if p.rstrip("/") != {SRC!r}]
try:
    import fedlake
    raise SystemExit("fedlake should not be importable here")
except ImportError:
    pass
import json, mlflow, numpy as np
client = mlflow.MlflowClient()
assert str(client.get_model_version_by_alias("lake_e2e", "champion").version) == {version!r}
model = mlflow.pyfunc.load_model("models:/lake_e2e@champion")
import fedlake
assert "mlartifacts" in fedlake.__file__ or "tmp" in fedlake.__file__, fedlake.__file__
out = model.predict(np.load({str(tmp_path / "x.npy")!r}))
print(json.dumps(out.tolist()))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return np.array(json.loads(out.stdout.strip().splitlines()[-1]))
