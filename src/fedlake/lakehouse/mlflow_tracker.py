"""A Tracker on MLflow: an embedded SQLite store per run folder, or a Databricks workspace.

Locally, ``MlflowTracker(run_dir)`` keeps everything under the run folder
(``mlflow.db`` and ``mlartifacts/``); no server is needed. On Databricks, pass
``tracking_uri="databricks"`` and ``registry_uri="databricks-uc"``, an absolute
workspace experiment path (``experiment="/Users/me@example.com/fedlake"``) and a
three-level model name (``catalog.schema.model``) to :meth:`register_model`;
Unity Catalog requires a model signature, which the logged model always carries.

All calls go through an explicit ``MlflowClient``: nothing touches MLflow's
process-global active run or tracking URI, so several trackers can coexist.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedlake.lakehouse.mlflow_setup import disable_telemetry, import_mlflow

__all__ = ["MlflowTracker", "disable_telemetry", "flatten_params", "import_mlflow"]

# MLflow's limits (mlflow.utils.validation) and the characters it accepts in keys.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\- /]")
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


def flatten_params(params: Mapping[str, Any], *, prefix: str = "") -> dict[str, str]:
    """Nested params as flat ``a.b.c`` keys with string values within MLflow's limits."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
            continue
        is_list = isinstance(value, (list, tuple))
        text = json.dumps(value, default=str) if is_list else str(value)
        out[_clean_key(name)] = text[:MAX_PARAM_VALUE_LENGTH]
    return out


def _clean_key(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", key)[:MAX_KEY_LENGTH]


def _metric_value(value: Any) -> float | None:
    """``value`` as a float, or None for missing, NaN or non-numeric values (skipped)."""
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return None if math.isnan(value) else value


class MlflowTracker:
    """Tracker that logs to MLflow through an explicit client (see the module docstring)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tracking_uri: str | None = None,
        experiment: str = "fedlake",
        registry_uri: str | None = None,
    ) -> None:
        mlflow = import_mlflow()
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or f"sqlite:///{self.run_dir / 'mlflow.db'}"
        self.registry_uri = registry_uri or self.tracking_uri
        self.artifact_location = (self.run_dir / "mlartifacts").as_uri()
        self.client = mlflow.MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
        )
        self.experiment_id = self._experiment_id(experiment)
        self.run_id: str | None = None
        self._active = False

    def __repr__(self) -> str:
        return f"MlflowTracker(tracking_uri={self.tracking_uri!r}, run_id={self.run_id!r})"

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        local = not self.tracking_uri.startswith("databricks")
        try:
            return str(
                self.client.create_experiment(
                    name, artifact_location=self.artifact_location if local else None
                )
            )
        except Exception:  # created concurrently by another tracker
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start(
        self, run_name: str, params: Mapping[str, Any], *, resume_id: str | None = None
    ) -> str:
        """Start a run (or reopen ``resume_id``) and log flat params; returns the run id.

        On resume, params already logged keep their value (MLflow params are
        immutable); a changed value is recorded as tag ``fedlake.resumed_param.<key>``.

        Raises:
            RuntimeError: a run is already active on this tracker.
            ValueError: ``resume_id`` does not name a run in this tracking store.
        """
        if self._active:
            raise RuntimeError(f"run {self.run_id} is still active; call end() first")
        flat = flatten_params(params)
        if resume_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=run_name, tags={"fedlake.run_name": run_name}
            )
            logged: dict[str, str] = {}
        else:
            run = self._get_run(resume_id)
            self.client.update_run(resume_id, status="RUNNING")
            logged = dict(run.data.params)
        self.run_id, self._active = run.info.run_id, True
        new = {k: v for k, v in flat.items() if k not in logged}
        changed = {
            _clean_key(f"fedlake.resumed_param.{k}"): v
            for k, v in flat.items()
            if k in logged and logged[k] != v
        }
        self._log_batch(params=new, tags=changed)
        return str(self.run_id)

    def _get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            raise ValueError(
                f"cannot resume MLflow run {run_id!r}: not found in {self.tracking_uri}"
            ) from err

    def _require_run(self) -> str:
        if not self._active or self.run_id is None:
            raise RuntimeError("no active MLflow run: call start() first")
        return self.run_id

    def _log_batch(
        self,
        *,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        step: int = 0,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._require_run()
        stamp = int(time.time() * 1000)
        p = [Param(k, v) for k, v in (params or {}).items()]
        t = [RunTag(k, v) for k, v in (tags or {}).items()]
        m = [Metric(k, v, stamp, step) for k, v in (metrics or {}).items()]
        for i in range(0, len(p), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=p[i : i + MAX_PARAMS_PER_BATCH])
        for i in range(0, len(t), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=t[i : i + MAX_PARAMS_PER_BATCH])
        for i in range(0, len(m), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=m[i : i + MAX_METRICS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step`` (the round); None, NaN and non-numbers are skipped."""
        clean = {
            _clean_key(k): v for k, raw in metrics.items() if (v := _metric_value(raw)) is not None
        }
        self._log_batch(metrics=clean, step=int(step))

    def log_artifact(self, path: Path) -> None:
        """Attach a file (or a folder, under its own name) to the run."""
        run_id = self._require_run()
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path))
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or folder")

    def register_model(
        self, params: Any, spec_json: str, model_config: Mapping[str, Any], *, name: str, alias: str
    ) -> str:
        """Log the global model as a pyfunc, register it as ``name`` and point ``alias`` at it.

        Returns the new model version (load it with ``models:/<name>@<alias>``).
        """
        import tempfile

        from fedlake.lakehouse.pyfunc_model import save_pyfunc

        run_id = self._require_run()
        leaf = _clean_key(name.rsplit(".", 1)[-1]).replace("/", "_").replace(" ", "_")
        artifact_path = f"models/{leaf}-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="fedlake-model-") as tmp:
            local = save_pyfunc(Path(tmp) / "model", params, spec_json, model_config)
            self.client.log_artifacts(run_id, str(local), artifact_path=artifact_path)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        self._ensure_registered_model(name)
        version = self.client.create_model_version(
            name, source, run_id=run_id, tags={"fedlake.kind": str(model_config.get("kind"))}
        )
        self._wait_ready(name, str(version.version))
        self.client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name)
            except MlflowException:  # created concurrently
                self.client.get_registered_model(name)

    def _wait_ready(self, name: str, version: str, *, timeout_s: float = 600.0) -> None:
        """Wait until the registry has copied the version (immediate locally; async on UC)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = str(self.client.get_model_version(name, version).status)
            if status.endswith("READY"):
                return
            if "FAILED" in status:
                raise RuntimeError(f"registering {name} version {version} failed: {status}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} version {version} not ready after {timeout_s} s")
            time.sleep(1.0)

    def load_model(self, name: str, alias: str) -> Any:
        """Load ``models:/<name>@<alias>`` from this tracker's registry as a pyfunc model."""
        mlflow = import_mlflow()
        if self.registry_uri.startswith("databricks"):
            return mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
        version = self.client.get_model_version_by_alias(name, alias)
        uri = self.client.get_model_version_download_uri(name, version.version)
        return mlflow.pyfunc.load_model(uri)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``status`` (FINISHED, FAILED or KILLED); no-op when none is active."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        if not self._active or self.run_id is None:
            return
        self.client.set_terminated(self.run_id, status=status)
        self._active = False
