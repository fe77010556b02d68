"""Model factories (mlp, cnn1d) and the trainer registry."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedlake.client.logreg import LogRegTrainer
from fedlake.client.torch_adapter import TorchTrainer
from fedlake.core.trainer import LocalConfig, Trainer
from fedlake.models import MODEL_KINDS, build_trainer
from fedlake.models.cnn1d import cnn1d
from fedlake.models.mlp import mlp

SRC = Path(__file__).resolve().parents[2] / "src"


def test_mlp_shapes_and_layers() -> None:
    net = mlp(6, 3, hidden=(8, 4), dropout=0.1)
    assert net(torch.zeros(5, 2, 3)).shape == (5, 3)  # flattens its input
    assert [k for k in net.state_dict()] == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "out.weight",
        "out.bias",
    ]
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 2
    linear = mlp(6, 3, hidden=())
    assert [k for k in linear.state_dict()] == ["out.weight", "out.bias"]
    assert not any(isinstance(m, nn.Dropout) for m in mlp(6, 3).modules())


def test_cnn1d_shapes_and_size() -> None:
    net = cnn1d(4, 128, 6)
    assert net(torch.zeros(3, 4, 128)).shape == (3, 6)
    assert net(torch.zeros(2, 4, 9)).shape == (2, 6)  # global pooling: any length >= 4
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == (4 * 16 * 5 + 16) + (16 * 32 * 5 + 32) + (32 * 6 + 6)
    assert all(v.is_floating_point() for v in net.state_dict().values())


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: mlp(0, 3), "in_features must be >= 1, got 0"),
        (lambda: mlp(6, 1), "num_classes must be >= 2, got 1"),
        (
            lambda: mlp(6, 3, hidden=(8, 0)),
            r"hidden widths must be positive integers, got \(8, 0\)",
        ),
        (lambda: mlp(6, 3, dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (lambda: cnn1d(0, 128, 3), "in_channels must be >= 1, got 0"),
        (lambda: cnn1d(4, 128, 1), "num_classes must be >= 2, got 1"),
        (lambda: cnn1d(4, 128, 3, channels=()), "channels must be one or more positive integers"),
        (lambda: cnn1d(4, 128, 3, kernel_size=4), "kernel_size must be a positive odd integer"),
        (lambda: cnn1d(4, 3, 3), "length must be >= 4 for 2 pooling blocks, got 3"),
    ],
)
def test_factory_validation(factory: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    ("config", "cls", "size"),
    [
        (
            {"kind": "logreg", "input_shape": [2, 5], "num_classes": 3, "l2": 0.01},
            LogRegTrainer,
            33,
        ),
        (
            {"kind": "mlp", "input_shape": [2, 5], "num_classes": 3, "hidden": [8]},
            TorchTrainer,
            115,
        ),
        (
            {
                "kind": "cnn1d",
                "input_shape": [2, 16],
                "num_classes": 3,
                "channels": [4],
                "kernel_size": 3,
            },
            TorchTrainer,
            (2 * 4 * 3 + 4) + (4 * 3 + 3),
        ),
    ],
)
def test_registry_builds_from_json_config(config: dict[str, Any], cls: type, size: int) -> None:
    trainer = build_trainer(**json.loads(json.dumps(config)))
    assert isinstance(trainer, cls) and isinstance(trainer, Trainer)
    assert trainer.spec.size == size
    shape = tuple(config["input_shape"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, *shape)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    p0 = trainer.init_params(0)

    def run(t: Trainer) -> np.ndarray:
        cfg = LocalConfig(epochs=2, batch_size=8, lr=0.05)
        return t.fit(p0, x, y, config=cfg, rng=np.random.default_rng(1)).params

    expected = run(trainer)
    assert np.array_equal(run(trainer), expected)
    assert np.array_equal(run(pickle.loads(pickle.dumps(trainer))), expected)
    assert set(trainer.evaluate(expected, x, y)) == {"loss", "accuracy", "examples"}


def test_registry_defaults_and_none_options() -> None:
    config = {"kind": "cnn1d", "hidden": None, "channels": None}  # pydantic's ModelConfig shape
    t = build_trainer(**config, input_shape=(4, 128), num_classes=6)
    assert isinstance(t, TorchTrainer)
    assert t.spec.size == sum(p.numel() for p in cnn1d(4, 128, 6).parameters())
    m = build_trainer("mlp", input_shape=(10,), num_classes=2, optimizer="adam", weight_decay=1e-4)
    assert isinstance(m, TorchTrainer) and (m.optimizer, m.weight_decay) == ("adam", 1e-4)
    assert m.spec.size == 10 * 64 + 64 + 64 * 2 + 2
    assert MODEL_KINDS == ("logreg", "mlp", "cnn1d")


@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        ("resnet", {}, "unknown model kind 'resnet'; accepted: logreg, mlp, cnn1d"),
        (
            "logreg",
            {"hidden": [8]},
            "unknown options for model kind 'logreg': hidden; accepted: l2",
        ),
        ("mlp", {"channels": [4], "lr": 1}, "unknown options for model kind 'mlp': channels, lr"),
        ("mlp", {"input_shape": []}, "input_shape must be one or more positive integers"),
        ("mlp", {"input_shape": 6}, "input_shape must be one or more positive integers, got 6"),
        ("mlp", {"input_shape": [3, 0]}, "input_shape must be one or more positive integers"),
        ("mlp", {"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
        ("mlp", {"num_classes": 2.0}, "num_classes must be an integer >= 2, got 2.0"),
        ("mlp", {"hidden": 64}, "hidden must be a list of positive integers, got 64"),
        ("mlp", {"hidden": [64, -1]}, "hidden widths must be positive integers"),
        ("mlp", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ("mlp", {"optimizer": "rmsprop"}, "optimizer must be one of"),
        ("cnn1d", {"input_shape": [128]}, r"needs input_shape \(channels, length\), got \(128,\)"),
        ("cnn1d", {"kernel_size": 4}, "kernel_size must be a positive odd integer"),
        ("cnn1d", {"channels": "16"}, "channels must be a list of positive integers"),
        ("logreg", {"l2": -1.0}, "l2 must be >= 0, got -1.0"),
    ],
)
def test_registry_errors(kind: str, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"input_shape": (4, 16), "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_trainer(kind, **args)


def test_registry_imports_and_builds_logreg_without_torch() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from fedlake.core.trainer import LocalConfig
        from fedlake.models import build_trainer

        t = build_trainer("logreg", input_shape=[3], num_classes=2)
        x = np.eye(3, dtype=np.float32)
        y = np.array([0, 1, 1])
        t.fit(t.init_params(0), x, y, config=LocalConfig(), rng=np.random.default_rng(0))
        try:
            build_trainer("mlp", input_shape=[3], num_classes=2)
        except ImportError as err:
            print(err)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC)},
    ).stdout
    assert "model kind 'mlp' needs PyTorch" in out
    assert "pip install torch==2.13.0" in out and "fedlake[torch]" in out
