"""fit_cohort: the vectorised cohort equals the per-client fit loop, rng states included."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedlake.client.cohort import fit_cohort
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.torch_adapter import TorchTrainer
from fedlake.core.algorithm import SampleDP
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform, chain
from fedlake.models.cnn1d import cnn1d
from fedlake.models.mlp import mlp
from fedlake.transforms.local import add_correction, proximal

# batch 8: sizes give 3, 1 (fewer rows than a batch), 5, 3 (ragged) and 4 steps per epoch
SIZES = (23, 5, 40, 17, 31)
CAPS = (None, 3, 11, 7, 2)  # 11 and 7: mid-epoch cuts; 3 on a 1-step-per-epoch client
CONFIG = LocalConfig(epochs=4, batch_size=8, lr=0.2)


def cohort_data(shape: tuple[int, ...], c: int, *, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, c, n)) for n in SIZES]


def logreg() -> tuple[LogRegTrainer, list[Any]]:
    return LogRegTrainer(6, 3, l2=0.05), cohort_data((2, 3), 3)


def mlp_trainer(**kw: Any) -> TorchTrainer:
    fn = functools.partial(mlp, 6, 3, hidden=(16,), dropout=kw.pop("dropout", 0.0))
    return TorchTrainer(fn, input_shape=(2, 3), num_classes=3, **kw)


def cnn_trainer() -> TorchTrainer:
    fn = functools.partial(cnn1d, 2, 16, 3, channels=(4, 8), kernel_size=3)
    return TorchTrainer(fn, input_shape=(2, 16), num_classes=3)


def log_softmax_net() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3), nn.LogSoftmax(1)
    )


TRAINERS = {
    "logreg": logreg,
    "mlp": lambda: (mlp_trainer(), cohort_data((2, 3), 3)),
    "cnn1d": lambda: (cnn_trainer(), cohort_data((2, 16), 3)),
    "nll": lambda: (
        TorchTrainer(log_softmax_net, input_shape=(2, 3), num_classes=3, loss="nll"),
        cohort_data((2, 3), 3),
    ),
}


def start_params(trainer: Any) -> np.ndarray:
    d = trainer.spec.size
    return trainer.init_params(0) + np.random.default_rng(7).normal(scale=0.1, size=d).astype(
        np.float32
    )


def per_client(
    trainer: Any,
    p0: np.ndarray,
    data: list[Any],
    rngs: list[np.random.Generator],
    caps: tuple[int | None, ...],
    transforms: list[Transform | None],
) -> list[FitResult]:
    return [
        trainer.fit(p0, x, y, config=replace(CONFIG, max_steps=cap), rng=rng, grad_transform=tx)
        for (x, y), rng, cap, tx in zip(data, rngs, caps, transforms, strict=True)
    ]


def assert_same(
    got: list[FitResult] | None,
    want: list[FitResult],
    rngs_got: list[np.random.Generator],
    rngs_want: list[np.random.Generator],
) -> None:
    assert got is not None and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.steps == w.steps and g.num_examples == w.num_examples and g.privacy is None
        assert g.params.dtype == np.float32 and g.params.shape == w.params.shape
        np.testing.assert_allclose(g.params, w.params, rtol=1e-5, atol=1e-6)
        assert g.loss == pytest.approx(w.loss, rel=1e-5, abs=1e-6)
    for a, b in zip(rngs_got, rngs_want, strict=True):
        assert a.integers(1 << 62) == b.integers(1 << 62)  # same draws, in the same order


@pytest.mark.parametrize("kind", sorted(TRAINERS))
@pytest.mark.parametrize("local", ["none", "proximal", "proximal+correction"])
def test_cohort_matches_per_client_fits(kind: str, local: str) -> None:
    trainer, data = TRAINERS[kind]()
    p0 = start_params(trainer)
    m, d = len(data), trainer.spec.size
    corr = np.random.default_rng(3).normal(scale=0.2, size=(m, d)).astype(np.float32)
    if local == "none":
        stacked, each = None, [None] * m
    elif local == "proximal":
        stacked, each = proximal(0.5), [proximal(0.5)] * m
    else:
        stacked = chain(proximal(0.5), add_correction(corr))
        each = [chain(proximal(0.5), add_correction(corr[i])) for i in range(m)]
    rngs_a = [np.random.default_rng(10 + i) for i in range(m)]
    rngs_b = [np.random.default_rng(10 + i) for i in range(m)]
    got = fit_cohort(
        trainer, p0, data, config=CONFIG, rngs=rngs_a, max_steps=CAPS, grad_transform=stacked
    )
    want = per_client(trainer, p0, data, rngs_b, CAPS, each)
    assert [w.steps for w in want] == [12, 3, 11, 7, 2]
    assert_same(got, want, rngs_a, rngs_b)


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_config_max_steps_applies_without_per_client_caps(kind: str) -> None:
    trainer, data = TRAINERS[kind]()
    p0, m = start_params(trainer), len(data)
    config = replace(CONFIG, max_steps=6)
    rngs_a = [np.random.default_rng(i) for i in range(m)]
    rngs_b = [np.random.default_rng(i) for i in range(m)]
    got = fit_cohort(trainer, p0, data, config=config, rngs=rngs_a)
    want = per_client(trainer, p0, data, rngs_b, (6,) * m, [None] * m)
    assert [w.steps for w in want] == [6, 4, 6, 6, 6]
    assert_same(got, want, rngs_a, rngs_b)


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_cohort_of_one_and_empty_cohort(kind: str) -> None:
    trainer, data = TRAINERS[kind]()
    p0 = start_params(trainer)
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    got = fit_cohort(trainer, p0, data[2:3], config=CONFIG, rngs=[ra])
    assert_same(got, per_client(trainer, p0, data[2:3], [rb], (None,), [None]), [ra], [rb])
    assert fit_cohort(trainer, p0, [], config=CONFIG, rngs=[]) == []


def test_start_params_are_not_modified() -> None:
    trainer, data = logreg()
    p0 = start_params(trainer)
    before = p0.copy()
    rngs = [np.random.default_rng(i) for i in range(len(data))]
    got = fit_cohort(trainer, p0, data, config=CONFIG, rngs=rngs)
    assert got is not None and np.array_equal(p0, before)
    assert not np.shares_memory(got[0].params, got[1].params)


def counting_transform(*, stacked: bool) -> Transform:
    return Transform(lambda p: None, lambda v, s, *, params, rng: (v, s), stacked=stacked)


def dropout_free_rrelu() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.RReLU(), nn.Linear(4, 3))


def with_batchnorm() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))


class Noisy(nn.Module):
    """A layer that draws random numbers in training: vmap refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return out + torch.randn_like(out) if self.training else out


@pytest.mark.parametrize(
    ("make", "config", "tx"),
    [
        pytest.param(logreg, replace(CONFIG, dp=SampleDP(1.0, 1.0)), None, id="logreg-dp"),
        pytest.param(
            lambda: (mlp_trainer(), None), replace(CONFIG, dp=SampleDP(1.0, 1.0)), None, id="dp"
        ),
        pytest.param(logreg, CONFIG, counting_transform(stacked=False), id="unstacked"),
        pytest.param(
            lambda: (mlp_trainer(), None), CONFIG, counting_transform(stacked=False), id="torch-tx"
        ),
        pytest.param(lambda: (mlp_trainer(dropout=0.3), None), CONFIG, None, id="dropout"),
        pytest.param(lambda: (mlp_trainer(momentum=0.5), None), CONFIG, None, id="momentum"),
        pytest.param(lambda: (mlp_trainer(weight_decay=0.1), None), CONFIG, None, id="decay"),
        pytest.param(lambda: (mlp_trainer(optimizer="adam"), None), CONFIG, None, id="adam"),
        pytest.param(
            lambda: (TorchTrainer(with_batchnorm, input_shape=(2, 3), num_classes=3), None),
            CONFIG,
            None,
            id="batchnorm",
        ),
        pytest.param(
            lambda: (TorchTrainer(dropout_free_rrelu, input_shape=(2, 3), num_classes=3), None),
            CONFIG,
            None,
            id="rrelu",
        ),
        pytest.param(
            lambda: (TorchTrainer(Noisy, input_shape=(2, 3), num_classes=3), None),
            CONFIG,
            None,
            id="random-op",
        ),
        pytest.param(lambda: (object(), None), CONFIG, None, id="unknown-trainer"),
    ],
)
def test_returns_none_without_drawing_when_it_cannot_vectorise(
    make: Any, config: LocalConfig, tx: Transform | None
) -> None:
    trainer, _ = make()
    data = cohort_data((2, 3), 3)
    p0 = trainer.init_params(0) if hasattr(trainer, "init_params") else np.zeros(1, np.float32)
    rngs = [np.random.default_rng(i) for i in range(len(data))]
    assert fit_cohort(trainer, p0, data, config=config, rngs=rngs, grad_transform=tx) is None
    for i, rng in enumerate(rngs):
        assert rng.integers(1 << 62) == np.random.default_rng(i).integers(1 << 62)


def test_dropout_zero_is_vectorised() -> None:
    trainer, data = mlp_trainer(dropout=0.0), cohort_data((2, 3), 3)
    rngs = [np.random.default_rng(i) for i in range(len(data))]
    assert fit_cohort(trainer, trainer.init_params(0), data, config=CONFIG, rngs=rngs) is not None


def test_bad_lengths_and_data_are_reported() -> None:
    trainer, data = logreg()
    p0 = trainer.init_params(0)
    rngs = [np.random.default_rng(i) for i in range(len(data))]
    with pytest.raises(ValueError, match="one generator per client"):
        fit_cohort(trainer, p0, data, config=CONFIG, rngs=rngs[:2])
    with pytest.raises(ValueError, match="one entry per client"):
        fit_cohort(trainer, p0, data, config=CONFIG, rngs=rngs, max_steps=[1])
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        fit_cohort(trainer, p0, data, config=CONFIG, rngs=rngs, max_steps=[0] * len(data))
    with pytest.raises(ValueError, match="at least one example"):
        fit_cohort(
            trainer,
            p0,
            [*data, (data[0][0][:0], data[0][1][:0])],
            config=CONFIG,
            rngs=[*rngs, rngs[0]],
        )
    with pytest.raises(ValueError, match="params must have length"):
        fit_cohort(trainer, p0[:-1], data, config=CONFIG, rngs=rngs)


def test_trainer_threads_are_restored() -> None:
    trainer, data = mlp_trainer(threads=1), cohort_data((2, 3), 3)
    rngs = [np.random.default_rng(i) for i in range(len(data))]
    before = torch.get_num_threads()
    state = torch.get_rng_state()
    fit_cohort(trainer, trainer.init_params(0), data, config=CONFIG, rngs=rngs)
    assert torch.get_num_threads() == before
    assert torch.equal(torch.get_rng_state(), state)
