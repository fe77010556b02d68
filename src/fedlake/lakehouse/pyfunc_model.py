"""The global model as an MLflow pyfunc: flat params + spec + model config, served anywhere.

The saved model holds three artifacts (``params.npy``, ``spec.json``,
``model_config.json``) and a copy of the ``fedlake`` package, so loading it needs
only numpy (and torch for torch model kinds), not a fedlake install. Its
signature takes float64 rows of ``prod(input_shape)`` features (the numpy and
Spark default) and returns int64 class indices; a model trained on a table with a
feature pipeline (``model_config["preprocessing"]``) takes the table's raw columns by
name instead (numbers, category text, missing values) and applies the pipeline it
was trained with.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from fedlake.data.preprocess.pipeline import MODEL_CONFIG_KEY, FeaturePipeline
from fedlake.lakehouse.mlflow_setup import import_mlflow
from fedlake.lakehouse.schemas import params_to_bytes

mlflow = import_mlflow()

from mlflow.pyfunc import PythonModel  # noqa: E402  (after telemetry is switched off)

__all__ = ["FedlakeModel", "input_example", "model_signature", "pip_requirements", "save_pyfunc"]

ARTIFACTS = {"params": "params.npy", "spec": "spec.json", "model_config": "model_config.json"}
# Models from code: MLflow runs this script at load time instead of unpickling an object.
MODEL_SCRIPT = """\
from mlflow.models import set_model

from fedlake.lakehouse.pyfunc_model import FedlakeModel

set_model(FedlakeModel())
"""


class FedlakeModel(PythonModel):
    """Predicts class indices with the trainer rebuilt from the stored model config."""

    def load_context(self, context: Any) -> None:
        """Read the artifacts and rebuild the trainer (``build_trainer(**model_config)``)."""
        from fedlake.models.registry import build_trainer

        self.params = np.load(context.artifacts["params"]).astype(np.float32)
        self.spec_json = Path(context.artifacts["spec"]).read_text()
        self.model_config = json.loads(Path(context.artifacts["model_config"]).read_text())
        self.input_shape = tuple(int(s) for s in self.model_config["input_shape"])
        self.pipeline = _pipeline(self.model_config)
        self.trainer = build_trainer(**_trainer_kwargs(self.model_config))

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Class indices (n,): raw columns by name (a DataFrame) through the pipeline, if
        the model has one, else rows of features (array or DataFrame; flat rows reshaped)."""
        if self.pipeline is not None:
            return self._predict_raw(model_input)
        x = np.asarray(
            model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input,
            dtype=np.float32,
        )
        width = prod(self.input_shape)
        if x.ndim == 1 and x.size == width:
            x = x[None, :]
        if x.size != len(x) * width:
            raise ValueError(
                f"expected rows of {width} features (input_shape {self.input_shape}), "
                f"got an input of shape {x.shape}"
            )
        return self._classes(x)

    def _classes(self, x: np.ndarray) -> np.ndarray:
        probs = self.trainer.predict(self.params, x.reshape(len(x), *self.input_shape))
        return np.asarray(probs).argmax(axis=1).astype(np.int64)

    def _predict_raw(self, model_input: Any) -> np.ndarray:
        assert self.pipeline is not None
        if not hasattr(model_input, "columns"):
            raise ValueError(
                "this model takes its raw columns by name (a DataFrame with "
                f"{', '.join(self.pipeline.input_columns)}), got {type(model_input).__name__}"
            )
        columns = {c: model_input[c].to_numpy() for c in model_input.columns}
        return self._classes(self.pipeline.transform(columns, rows=len(model_input)))


def _pipeline(model_config: Mapping[str, Any]) -> FeaturePipeline | None:
    raw = model_config.get(MODEL_CONFIG_KEY)
    return None if raw is None else FeaturePipeline.from_json(raw)


def _trainer_kwargs(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to tuples, as the registry's options expect (the pipeline left out)."""
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in model_config.items()
        if k != MODEL_CONFIG_KEY
    }


def model_signature(model_config: Mapping[str, Any]) -> Any:
    """Signature: the pipeline's raw columns by name (optional: missing is allowed), or
    float64 rows of ``prod(input_shape)`` features; int64 classes out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    outputs = Schema([TensorSpec(np.dtype(np.int64), (-1,))])
    pipeline = _pipeline(model_config)
    if pipeline is not None:
        cols: list[ColSpec | TensorSpec] = [
            ColSpec(pipeline.input_type(c), c, required=False) for c in pipeline.input_columns
        ]
        return ModelSignature(inputs=Schema(cols), outputs=outputs)
    width = prod(int(s) for s in model_config["input_shape"])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, width))]), outputs=outputs
    )


def input_example(model_config: Mapping[str, Any]) -> Any:
    """One row the model accepts: zeros, or (with a pipeline) typical raw values by name."""
    pipeline = _pipeline(model_config)
    if pipeline is None:
        return np.zeros((1, prod(int(s) for s in model_config["input_shape"])))
    import pandas as pd

    row: dict[str, Any] = {}
    for step in pipeline.columns:
        kind = pipeline.input_type(step.name)
        if step.kind == "numeric":
            row[step.name] = round(step.mean) if kind == "long" else step.mean
        elif kind == "boolean":
            row[step.name] = True
        elif kind == "long":
            row[step.name] = int(step.vocabulary[0]) if step.vocabulary else 0
        else:
            row[step.name] = step.vocabulary[0] if step.vocabulary else ""
    return pd.DataFrame([row])


def pip_requirements(model_config: Mapping[str, Any]) -> list[str]:
    """Pinned requirements of the serving environment (no inference, so nothing is downloaded)."""
    reqs = [f"numpy=={np.__version__}"]
    if model_config.get("kind") != "logreg":
        try:  # the installed version, without paying for ``import torch``
            reqs.append(f"torch=={version('torch').split('+')[0]}")
        except PackageNotFoundError:
            reqs.append("torch")
    return reqs


def save_pyfunc(
    path: str | Path,
    params: Any,
    spec_json: str,
    model_config: Mapping[str, Any],
    *,
    include_code: bool = True,
) -> Path:
    """Save the model as an MLflow pyfunc folder at ``path`` (which must not exist yet).

    ``include_code`` copies the ``fedlake`` package into the model so it loads where
    fedlake is not installed (a Databricks serving endpoint, another cluster).
    """
    import fedlake

    if "input_shape" not in model_config or "kind" not in model_config:
        raise ValueError(
            f"model_config must hold at least 'kind' and 'input_shape', got {sorted(model_config)}"
        )
    path = Path(path)
    vector = np.frombuffer(params_to_bytes(params), dtype="<f4")
    with tempfile.TemporaryDirectory(prefix="fedlake-pyfunc-") as tmp:
        files = {key: Path(tmp) / name for key, name in ARTIFACTS.items()}
        np.save(files["params"], vector)
        files["spec"].write_text(spec_json)
        files["model_config"].write_text(json.dumps(dict(model_config), sort_keys=True))
        script = Path(tmp) / "fedlake_model.py"
        script.write_text(MODEL_SCRIPT)
        code = None
        if include_code:
            code = Path(tmp) / "code" / "fedlake"
            shutil.copytree(
                Path(fedlake.__file__).parent,
                code,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(script),
            artifacts={key: str(f) for key, f in files.items()},
            signature=model_signature(model_config),
            input_example=input_example(model_config),
            pip_requirements=pip_requirements(model_config),
            code_paths=[str(code)] if code is not None else None,
        )
    return path
