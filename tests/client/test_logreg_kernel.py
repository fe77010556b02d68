"""The compiled logistic-regression loop computes what the numpy loop computes."""

from __future__ import annotations

import numpy as np
import pytest

import fedlake.client.logreg_kernel as kernel
from fedlake.client.logreg import LogRegTrainer
from fedlake.core.algorithm import LocalConfig


def data(n: int, f: int = 7, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = (x @ rng.normal(size=(f, c))).argmax(axis=1).astype(np.int64)
    return x, y


def both(monkeypatch, trainer, params, x, y, config):
    """(compiled, numpy) results from identically seeded generators, and the generators."""
    assert kernel.AVAILABLE, "numba is a dependency: the compiled loop must be importable"
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    fast = trainer.fit(params, x, y, config=config, rng=rng_a)
    with monkeypatch.context() as m:
        m.setattr(kernel, "AVAILABLE", False)
        slow = trainer.fit(params, x, y, config=config, rng=rng_b)
    return fast, slow, rng_a, rng_b


@pytest.mark.parametrize(
    ("n", "config", "l2"),
    [
        (53, LocalConfig(epochs=3, batch_size=10, lr=0.1), 0.0),  # ragged last batch
        (4, LocalConfig(epochs=5, batch_size=10, lr=0.3), 0.0),  # fewer rows than a batch
        (40, LocalConfig(epochs=4, batch_size=8, lr=0.05, max_steps=13), 0.0),  # mid-epoch
        (31, LocalConfig(epochs=2, batch_size=5, lr=0.1), 0.2),  # l2 penalty
    ],
)
def test_compiled_loop_matches_numpy(monkeypatch, n, config, l2) -> None:
    x, y = data(n)
    trainer = LogRegTrainer(7, 4, l2=l2)
    start = np.random.default_rng(1).normal(size=32).astype(np.float32)
    fast, slow, rng_a, rng_b = both(monkeypatch, trainer, start, x, y, config)
    np.testing.assert_allclose(fast.params, slow.params, rtol=1e-5, atol=1e-6)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-5)
    assert (fast.steps, fast.num_examples) == (slow.steps, slow.num_examples)
    assert rng_a.integers(1 << 62) == rng_b.integers(1 << 62)  # same draws, same order
    assert fast.params.dtype == np.float32


def test_huge_logits_stay_finite(monkeypatch) -> None:
    x, y = data(30)
    trainer = LogRegTrainer(7, 4)
    start = np.full(32, 40.0, dtype=np.float32)  # logits in the thousands: exp underflows
    start[::3] = -40.0
    fast, slow, _, _ = both(monkeypatch, trainer, start, x, y, LocalConfig(epochs=1, lr=0.01))
    assert np.isfinite(fast.loss) and np.isfinite(fast.params).all()
    assert fast.loss == pytest.approx(slow.loss, rel=1e-4)


def test_nan_features_are_not_hidden(monkeypatch) -> None:
    x, y = data(20)
    x[3, 2] = np.nan
    fast = LogRegTrainer(7, 4).fit(
        np.zeros(32, np.float32), x, y, config=LocalConfig(), rng=np.random.default_rng(0)
    )
    assert not np.isfinite(fast.params).all()  # the client round rejects it as diverged


@pytest.mark.parametrize("kind", ["proximal", "correction", "both", "anchored"])
def test_affine_local_steps_compile_to_the_same_numbers(monkeypatch, kind) -> None:
    from fedlake.core.transform import chain
    from fedlake.transforms.local import add_correction, proximal

    x, y = data(45)
    trainer = LogRegTrainer(7, 4)
    start = np.random.default_rng(3).normal(size=32).astype(np.float32)
    other = np.random.default_rng(4).normal(size=32).astype(np.float32)
    step = {
        "proximal": proximal(0.7),
        "correction": add_correction(0.1 * other),
        "both": chain(add_correction(0.1 * other), proximal(0.7)),
        "anchored": proximal(0.5, anchor=other),
    }[kind]
    assert step.affine is not None
    config = LocalConfig(epochs=3, batch_size=8, lr=0.1, max_steps=14)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    fast = trainer.fit(start, x, y, config=config, rng=rng_a, grad_transform=step)
    with monkeypatch.context() as m:
        m.setattr(kernel, "AVAILABLE", False)  # the numpy loop calls the transform each step
        slow = trainer.fit(start, x, y, config=config, rng=rng_b, grad_transform=step)
    np.testing.assert_allclose(fast.params, slow.params, rtol=1e-5, atol=1e-6)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-5)
    assert rng_a.integers(1 << 62) == rng_b.integers(1 << 62)


def test_a_masked_step_is_not_affine_and_runs_in_numpy() -> None:
    from fedlake.compression.pruning import mask_gradients
    from fedlake.core.transform import chain
    from fedlake.transforms.local import proximal

    assert chain(proximal(0.1), mask_gradients(np.ones(32, bool))).affine is None
    assert chain(proximal(0.1), proximal(0.2)).affine is None  # two pulls: no closed form
