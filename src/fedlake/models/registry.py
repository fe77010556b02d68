"""Build a trainer from a model kind and options (also from a stored JSON model config).

Importing this module needs only numpy; torch is imported when a torch kind is built.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from fedlake.client.logreg import LogRegTrainer
from fedlake.core.trainer import Trainer

__all__ = ["MODEL_KINDS", "build_trainer", "trainer_from_config"]

MODEL_KINDS = ("logreg", "mlp", "cnn1d")

_TORCH_OPTIONS = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}
_OPTIONS: dict[str, dict[str, Any]] = {
    "logreg": {"l2": 0.0},
    "mlp": {"hidden": (64,), "dropout": 0.0, **_TORCH_OPTIONS},
    "cnn1d": {"channels": (16, 32), "kernel_size": 5, **_TORCH_OPTIONS},
}
TORCH_INSTALL_HINT = "pip install torch==2.13.0 (CPU build) or pip install 'fedlake[torch]'"


def build_trainer(
    kind: str, *, input_shape: Sequence[int], num_classes: int, **options: Any
) -> Trainer:
    """A picklable, deterministic trainer for model ``kind``.

    Accepts a stored config as ``build_trainer(**config)`` (lists for tuples);
    options given as ``None`` are ignored, so one config shape with every
    kind's options (unused ones ``None``) works for all kinds. Options per kind:
    ``logreg``: ``l2``; ``mlp``: ``hidden``, ``dropout``; ``cnn1d``:
    ``channels``, ``kernel_size`` (``input_shape`` is ``(channels, length)``);
    both torch kinds also take ``optimizer``, ``momentum`` and ``weight_decay``.

    Raises:
        ValueError: unknown kind or option, or an invalid shape or value.
        ImportError: a torch kind was asked for and torch is not installed.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; accepted: {', '.join(MODEL_KINDS)}")
    shape = _shape(input_shape)
    num_classes = int(num_classes) if _positive_int(num_classes) else num_classes
    if not _positive_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    defaults = _OPTIONS[kind]
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown options for model kind {kind!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(defaults))}"
        )
    opts = {**defaults, **options}
    if kind == "logreg":
        return LogRegTrainer(prod(shape), num_classes, l2=float(opts["l2"]))
    return _torch_trainer(kind, shape, num_classes, opts)


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    is_seq = isinstance(input_shape, Sequence) and not isinstance(input_shape, (str, bytes))
    shape = tuple(input_shape) if is_seq else ()
    if not shape or not all(_positive_int(s) for s in shape):
        raise ValueError(f"input_shape must be one or more positive integers, got {input_shape!r}")
    return tuple(int(s) for s in shape)


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 1)


def _widths(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    return tuple(value)


def _torch_trainer(
    kind: str, shape: tuple[int, ...], num_classes: int, opts: dict[str, Any]
) -> Trainer:
    try:
        import torch  # noqa: F401  (fail here, with the hint, not deep inside the adapter)
    except ImportError as err:
        raise ImportError(f"model kind {kind!r} needs PyTorch: {TORCH_INSTALL_HINT}") from err
    from fedlake.client.torch_adapter import TorchTrainer
    from fedlake.models.cnn1d import cnn1d
    from fedlake.models.mlp import mlp

    if kind == "mlp":
        model_fn = functools.partial(
            mlp,
            prod(shape),
            num_classes,
            hidden=_widths("hidden", opts["hidden"]),
            dropout=float(opts["dropout"]),
        )
    else:
        if len(shape) != 2:
            raise ValueError(
                f"model kind 'cnn1d' needs input_shape (channels, length), got {shape}"
            )
        model_fn = functools.partial(
            cnn1d,
            shape[0],
            shape[1],
            num_classes,
            channels=_widths("channels", opts["channels"]),
            kernel_size=opts["kernel_size"],
        )
    trainer = TorchTrainer(
        model_fn,
        input_shape=shape,
        num_classes=num_classes,
        optimizer=opts["optimizer"],
        momentum=float(opts["momentum"]),
        weight_decay=float(opts["weight_decay"]),
    )
    _ = trainer.spec  # build the module once here, so bad options fail now and not in a worker
    return trainer


def trainer_from_config(config: dict[str, Any]) -> Trainer:
    """A trainer from a stored model config (the run's ``model_config``: JSON lists for
    tuples; its feature pipeline, if any, is the data's business and is ignored here)."""
    from fedlake.data.preprocess.pipeline import MODEL_CONFIG_KEY

    opts = {k: v for k, v in config.items() if k != MODEL_CONFIG_KEY}
    for key in ("hidden", "channels", "input_shape"):
        if key in opts and opts[key] is not None:
            opts[key] = tuple(opts[key])
    return build_trainer(**opts)
