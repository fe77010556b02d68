"""MlflowTracker against an embedded SQLite store: params, metrics, resume, registry, pyfunc."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedlake.lakehouse import pyfunc_model
from fedlake.lakehouse.mlflow_tracker import (
    MAX_PARAM_VALUE_LENGTH,
    MlflowTracker,
    flatten_params,
)
from fedlake.models.registry import build_trainer
from fedlake.orchestration.interfaces import Tracker

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One SQLite store for the module: creating its tables takes a few seconds."""
    return tmp_path_factory.mktemp("mlflow-run")


@pytest.fixture
def tracker(run_dir):
    tracker = MlflowTracker(run_dir, experiment="fedlake-tests")
    yield tracker
    tracker.end("KILLED")


def test_defaults_live_under_the_run_folder(tracker, run_dir):
    assert isinstance(tracker, Tracker)
    assert tracker.tracking_uri == f"sqlite:///{run_dir.resolve()}/mlflow.db"
    assert tracker.registry_uri == tracker.tracking_uri
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.name == "fedlake-tests"
    assert exp.artifact_location == (run_dir.resolve() / "mlartifacts").as_uri()
    assert (run_dir / "mlflow.db").is_file()


def test_flatten_params_stringifies_and_truncates():
    flat = flatten_params(
        {"fed": {"rounds": 5, "dp": {"sigma": 0.5}}, "hidden": (64, 32), "x": "y" * 7000}
    )
    assert flat == {
        "fed.rounds": "5",
        "fed.dp.sigma": "0.5",
        "hidden": "[64, 32]",
        "x": "y" * MAX_PARAM_VALUE_LENGTH,
    }
    assert flatten_params({"bad key!": None}) == {"bad key_": "None"}


def test_start_log_end_read_back(tracker, tmp_path):
    run_id = tracker.start("demo", {"algorithm": {"name": "fedavg"}, "seed": 3, "long": "z" * 9000})
    tracker.log_metrics({"eval_accuracy": 0.5, "eval_loss": 1.2, "skipped": None}, step=1)
    tracker.log_metrics({"eval_accuracy": 0.75, "nan": float("nan"), "n": np.int64(4)}, step=2)
    note = tmp_path / "history.json"
    note.write_text("[]")
    tracker.log_artifact(note)
    tracker.end()
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "demo"
    assert run.data.params["algorithm.name"] == "fedavg" and run.data.params["seed"] == "3"
    assert len(run.data.params["long"]) == MAX_PARAM_VALUE_LENGTH
    history = tracker.client.get_metric_history(run_id, "eval_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert set(run.data.metrics) == {"eval_accuracy", "eval_loss", "n"}
    assert [a.path for a in tracker.client.list_artifacts(run_id)] == ["history.json"]


def test_resume_reopens_the_same_run(tracker, run_dir):
    run_id = tracker.start("demo", {"rounds": 3, "seed": 0})
    tracker.log_metrics({"eval_accuracy": 0.25}, step=1)
    tracker.end("KILLED")
    again = MlflowTracker(run_dir, experiment="fedlake-tests")
    assert again.start("demo", {"rounds": 6, "seed": 0, "new": "x"}, resume_id=run_id) == run_id
    assert again.client.get_run(run_id).info.status == "RUNNING"
    again.log_metrics({"eval_accuracy": 0.5}, step=2)
    again.end()
    run = again.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"rounds": "3", "seed": "0", "new": "x"}  # params are immutable
    assert run.data.tags["fedlake.resumed_param.rounds"] == "6"
    steps = [m.step for m in again.client.get_metric_history(run_id, "eval_accuracy")]
    assert steps == [1, 2]
    with pytest.raises(
        ValueError, match="cannot resume MLflow run 'f00' : not found".replace(" :", ":")
    ):
        again.start("demo", {}, resume_id="f00")


def test_misuse_gives_clear_errors(tracker):
    with pytest.raises(RuntimeError, match="no active MLflow run: call start"):
        tracker.log_metrics({"a": 1.0}, step=0)
    tracker.start("demo", {})
    with pytest.raises(RuntimeError, match="still active; call end"):
        tracker.start("demo", {})
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        tracker.log_artifact(Path("/nonexistent/file.png"))
    with pytest.raises(ValueError, match="status must be one of FINISHED, FAILED, KILLED"):
        tracker.end("DONE")
    tracker.end()
    tracker.end()  # already closed: no-op


def test_register_alias_load_and_predict(tracker, monkeypatch):
    config = {"kind": "logreg", "input_shape": [6], "num_classes": 3}
    trainer = build_trainer("logreg", input_shape=(6,), num_classes=3)
    params = np.random.default_rng(0).normal(size=trainer.spec.size).astype(np.float32)
    tracker.start("demo", {})
    v1 = tracker.register_model(
        params, trainer.spec.to_json(), config, name="fl_demo", alias="champion"
    )
    v2 = tracker.register_model(
        -params, trainer.spec.to_json(), config, name="fl_demo", alias="champion"
    )
    assert (v1, v2) == ("1", "2")
    version = tracker.client.get_model_version_by_alias("fl_demo", "champion")
    assert str(version.version) == "2" and version.run_id == tracker.run_id

    x = np.random.default_rng(1).normal(size=(20, 6))
    expected = trainer.predict(-params, x.astype(np.float32)).argmax(axis=1)
    assert len(set(expected)) > 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    import mlflow

    model = mlflow.pyfunc.load_model("models:/fl_demo@champion")
    np.testing.assert_array_equal(model.predict(x), expected)
    np.testing.assert_array_equal(model.predict(pd.DataFrame(x)), expected)
    with pytest.raises(mlflow.exceptions.MlflowException, match="does not match expected shape"):
        model.predict(x[:, :5])
    np.testing.assert_array_equal(tracker.load_model("fl_demo", "champion").predict(x), expected)
    meta = model.metadata
    assert list(meta.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 6]


def test_pyfunc_reshapes_flat_rows_to_the_input_shape(tmp_path, monkeypatch):
    seen = []

    class FakeTrainer:
        def predict(self, params, x):
            seen.append(x.shape)
            return np.eye(3, dtype=np.float32)[np.arange(len(x)) % 3]

    monkeypatch.setattr("fedlake.models.registry.build_trainer", lambda kind, **kw: FakeTrainer())
    config = {"kind": "cnn1d", "input_shape": [2, 3], "num_classes": 3, "channels": [4]}
    files = {k: tmp_path / name for k, name in pyfunc_model.ARTIFACTS.items()}
    np.save(files["params"], np.zeros(5, np.float32))
    files["spec"].write_text("[]")
    files["model_config"].write_text(json.dumps(config))
    model = pyfunc_model.FedlakeModel()
    model.load_context(SimpleNamespace(artifacts={k: str(f) for k, f in files.items()}))
    out = model.predict(None, np.ones((4, 6)))
    assert out.dtype == np.int64 and out.tolist() == [0, 1, 2, 0] and seen == [(4, 2, 3)]
    assert model.predict(None, pd.DataFrame(np.ones((2, 6)))).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"expected rows of 6 features \(input_shape \(2, 3\)\)"):
        model.predict(None, np.ones((4, 5)))
    assert pyfunc_model.pip_requirements({"kind": "logreg"}) == [f"numpy=={np.__version__}"]
    assert any(r.startswith("torch") for r in pyfunc_model.pip_requirements(config))


def test_import_is_light_and_telemetry_is_off():
    """In a clean interpreter: importing the package stays light; MLflow telemetry stays off."""
    code = (
        "import sys, fedlake.lakehouse as L\n"
        "heavy = {'deltalake', 'mlflow', 'pyarrow', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "from fedlake.lakehouse.mlflow_tracker import import_mlflow\n"
        "import_mlflow()\n"
        "from mlflow.telemetry.client import get_telemetry_client\n"
        "import os\n"
        "print(get_telemetry_client(), os.environ['MLFLOW_DISABLE_TELEMETRY'])\n"
    )
    telemetry_vars = {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "CI"}
    env = {k: v for k, v in os.environ.items() if k not in telemetry_vars}
    env["PYTHONPATH"] = str(SRC)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "true"]
