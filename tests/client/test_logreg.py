"""LogRegTrainer: exact gradients, learning, determinism and the grad_transform hook."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from fedlake.client.logreg import LogRegTrainer, loss_and_grad, one_hot
from fedlake.core.params import frozen
from fedlake.core.trainer import LocalConfig, Trainer
from fedlake.core.transform import Transform, identity, scale


def blobs(n: int = 300, *, seed: int = 0, f: int = 5, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs, one per class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(c, f))
    y = rng.integers(0, c, n)
    x = centers[y] + rng.normal(size=(n, f))
    return x.astype(np.float32), y


def recorder() -> tuple[Transform, list[dict[str, Any]]]:
    """A transform that passes gradients through and records every call."""
    calls: list[dict[str, Any]] = []

    def init(params: np.ndarray) -> int:
        calls.append({"init": params.copy()})
        return 0

    def update(
        vec: np.ndarray, state: int, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        calls.append({"state": state, "grad": vec.copy(), "params": params.copy()})
        return vec, state + 1

    return Transform(init, update), calls


def zero_grads() -> Transform:
    """A transform that replaces every gradient with zeros."""

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        return np.zeros_like(vec), state

    return Transform(lambda p: None, update)


def test_spec_and_init() -> None:
    t = LogRegTrainer(4, 3)
    assert isinstance(t, Trainer)
    assert t.spec.names == ("weight", "bias")
    assert [s.shape for s in t.spec.tensors] == [(3, 4), (3,)]
    p = t.init_params(7)
    assert p.dtype == np.float32 and p.shape == (t.spec.size,) == (15,)
    assert not p.any()
    assert np.array_equal(p, t.init_params(8))


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 4))
    targets = one_hot(rng.integers(0, 3, 7), 3).astype(np.float64)
    params = rng.normal(size=15)
    loss, grad = loss_and_grad(params, x, targets, l2=0.3)
    assert grad.dtype == np.float64
    eps = 1e-6
    numeric = np.empty_like(params)
    for i in range(params.size):
        e = np.zeros_like(params)
        e[i] = eps
        numeric[i] = (
            loss_and_grad(params + e, x, targets, l2=0.3)[0]
            - loss_and_grad(params - e, x, targets, l2=0.3)[0]
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    # the loss itself, against a direct formula
    w, b = params[:12].reshape(3, 4), params[12:]
    logits = x @ w.T + b
    direct = np.mean(np.log(np.exp(logits).sum(1)) - (logits * targets).sum(1))
    assert loss == pytest.approx(direct + 0.15 * (w**2).sum(), rel=1e-12)


def test_gradient_closed_form_at_zero() -> None:
    x = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float32)
    targets = one_hot(np.array([0, 1]), 2)
    loss, grad = loss_and_grad(np.zeros(6, np.float32), x, targets)
    assert grad.dtype == np.float32
    assert loss == pytest.approx(np.log(2.0))
    resid = 0.5 - targets  # softmax is uniform at zero
    np.testing.assert_allclose(grad[:4].reshape(2, 2), resid.T @ x / 2, rtol=1e-6)
    np.testing.assert_allclose(grad[4:], resid.mean(0), rtol=1e-6)


def test_stable_for_huge_logits() -> None:
    params = np.array([1e4, 0.0, 0.0, 0.0], dtype=np.float32)  # weight (2, 1), bias (2,)
    x = np.ones((1, 1), np.float32)
    loss, grad = loss_and_grad(params, x, one_hot(np.array([1]), 2))
    assert loss == pytest.approx(1e4)
    np.testing.assert_allclose(grad, [1.0, -1.0, 1.0, -1.0])
    probs = LogRegTrainer(1, 2).predict(params, x)
    assert np.isfinite(probs).all() and probs[0, 0] == pytest.approx(1.0)


def test_learns_separable_problem() -> None:
    x, y = blobs()
    t = LogRegTrainer(5, 3)
    p0 = t.init_params(0)
    cfg = LocalConfig(epochs=5, batch_size=16, lr=0.1)
    first = t.fit(p0, x, y, config=cfg, rng=np.random.default_rng(0))
    assert first.params.dtype == np.float32 and first.params.shape == p0.shape
    assert (first.num_examples, first.steps) == (300, 5 * 19)
    second = t.fit(first.params, x, y, config=cfg, rng=np.random.default_rng(1))
    assert second.loss < first.loss < np.log(3)
    before, after = t.evaluate(p0, x, y), t.evaluate(second.params, x, y)
    assert before["loss"] == pytest.approx(np.log(3), rel=1e-6)
    assert after["loss"] < 0.1 and after["accuracy"] > 0.97
    assert after["examples"] == 300.0
    probs = t.predict(second.params, x)
    assert probs.dtype == np.float32 and probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.mean(probs.argmax(1) == y) == after["accuracy"]


def test_l2_shrinks_weights() -> None:
    x, y = blobs()
    cfg = LocalConfig(epochs=3, batch_size=32, lr=0.1)
    plain = LogRegTrainer(5, 3).fit(
        np.zeros(18, np.float32), x, y, config=cfg, rng=np.random.default_rng(0)
    )
    reg = LogRegTrainer(5, 3, l2=1.0).fit(
        np.zeros(18, np.float32), x, y, config=cfg, rng=np.random.default_rng(0)
    )
    assert np.linalg.norm(reg.params[:15]) < 0.5 * np.linalg.norm(plain.params[:15])


def test_flattens_inputs() -> None:
    x, y = blobs(f=6)
    t = LogRegTrainer(6, 3)
    cfg = LocalConfig(epochs=1, batch_size=10, lr=0.1)
    flat = t.fit(t.init_params(0), x, y, config=cfg, rng=np.random.default_rng(3))
    cube = t.fit(t.init_params(0), x.reshape(-1, 2, 3), y, config=cfg, rng=np.random.default_rng(3))
    assert np.array_equal(flat.params, cube.params)
    np.testing.assert_array_equal(
        t.predict(flat.params, x.reshape(-1, 3, 2)), t.predict(flat.params, x)
    )


def test_deterministic_in_rng_and_picklable() -> None:
    x, y = blobs()
    t = LogRegTrainer(5, 3, l2=0.01)
    cfg = LocalConfig(epochs=2, batch_size=8, lr=0.05)

    def run(trainer: LogRegTrainer, seed: int) -> np.ndarray:
        return trainer.fit(
            np.zeros(18, np.float32), x, y, config=cfg, rng=np.random.default_rng(seed)
        ).params

    a = run(t, 5)
    assert np.array_equal(a, run(t, 5))
    assert np.array_equal(a, run(pickle.loads(pickle.dumps(t)), 5))
    assert not np.array_equal(a, run(t, 6))


def test_does_not_mutate_inputs() -> None:
    x, y = blobs()
    x0, y0 = x.copy(), y.copy()
    start = frozen(np.full(18, 0.1))  # read-only, as the server hands it out
    res = LogRegTrainer(5, 3).fit(start, x, y, config=LocalConfig(), rng=np.random.default_rng(0))
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    assert np.all(start == np.float32(0.1)) and res.params.flags.writeable


def test_zeroed_gradients_leave_params_unchanged() -> None:
    x, y = blobs()
    start = np.random.default_rng(0).normal(size=18).astype(np.float32)
    res = LogRegTrainer(5, 3).fit(
        start,
        x,
        y,
        config=LocalConfig(epochs=2),
        rng=np.random.default_rng(0),
        grad_transform=zero_grads(),
    )
    assert np.array_equal(res.params, start) and res.steps == 20


def test_transform_sees_every_step_in_order() -> None:
    x, y = blobs(n=50)
    t = LogRegTrainer(5, 3)
    cfg = LocalConfig(epochs=3, batch_size=16, lr=0.2)
    start = np.random.default_rng(2).normal(size=18).astype(np.float32)
    tx, calls = recorder()
    res = t.fit(start, x, y, config=cfg, rng=np.random.default_rng(4), grad_transform=tx)
    assert res.steps == 3 * 4 and len(calls) == 1 + res.steps
    np.testing.assert_array_equal(calls[0]["init"], start)
    steps = calls[1:]
    assert [c["state"] for c in steps] == list(range(res.steps))
    np.testing.assert_array_equal(steps[0]["params"], start)
    for prev, cur in zip(
        steps[:-1], steps[1:], strict=True
    ):  # params passed are the current iterate
        np.testing.assert_array_equal(
            cur["params"], prev["params"] - np.float32(0.2) * prev["grad"]
        )
    plain = t.fit(start, x, y, config=cfg, rng=np.random.default_rng(4))
    # without a transform the compiled loop runs: the same steps, float32 rounding apart
    np.testing.assert_allclose(res.params, plain.params, rtol=1e-5, atol=1e-6)
    with_identity = t.fit(
        start, x, y, config=cfg, rng=np.random.default_rng(4), grad_transform=identity()
    )
    # identity() is an affine step: compiled like the plain fit, bit for bit
    assert np.array_equal(with_identity.params, plain.params)


def test_transform_rewrites_gradient() -> None:
    x, y = blobs()
    t = LogRegTrainer(5, 3)
    halved = t.fit(
        t.init_params(0),
        x,
        y,
        config=LocalConfig(lr=0.2),
        rng=np.random.default_rng(0),
        grad_transform=scale(0.5),
    )
    small_lr = t.fit(
        t.init_params(0), x, y, config=LocalConfig(lr=0.1), rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(halved.params, small_lr.params, rtol=1e-5, atol=1e-7)


def test_bad_transform_output_is_rejected() -> None:
    x, y = blobs()
    bad = Transform(lambda p: None, lambda v, s, *, params, rng: (v[:3], s))
    with pytest.raises(ValueError, match="grad_transform must return"):
        LogRegTrainer(5, 3).fit(
            np.zeros(18, np.float32),
            x,
            y,
            config=LocalConfig(),
            rng=np.random.default_rng(0),
            grad_transform=bad,
        )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0, 3), {}, "num_features must be >= 1, got 0"),
        ((4, 1), {}, "num_classes must be >= 2, got 1"),
        ((4, 3), {"l2": -0.5}, "l2 must be >= 0, got -0.5"),
    ],
)
def test_constructor_validation(
    args: tuple[int, int], kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        LogRegTrainer(*args, **kwargs)


@pytest.mark.parametrize(
    ("params", "x", "y", "match"),
    [
        (np.zeros(17), np.zeros((4, 5)), np.zeros(4, int), "params must have length 18"),
        (np.zeros(18), np.zeros((4, 6)), np.zeros(4, int), "5 features per example"),
        (np.zeros(18), np.zeros(4), np.zeros(4, int), "5 features per example"),
        (np.zeros(18), np.zeros((4, 5)), np.zeros(3, int), r"y must be shaped \(4,\)"),
        (np.zeros(18), np.zeros((4, 5)), np.zeros(4), "integer class labels, got dtype float64"),
        (np.zeros(18), np.zeros((4, 5)), np.array([0, 1, 2, 3]), r"labels must be in \[0, 3\)"),
        (np.zeros(18), np.zeros((0, 5)), np.zeros(0, int), "at least one example"),
    ],
)
def test_fit_validation(params: np.ndarray, x: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LogRegTrainer(5, 3).fit(params, x, y, config=LocalConfig(), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=match):
        LogRegTrainer(5, 3).evaluate(params, x, y)


def reference_sgd(
    x: np.ndarray, y: np.ndarray, *, c: int, cfg: LocalConfig, l2: float, seed: int
) -> tuple[np.ndarray, float, int, np.random.Generator]:
    """Plain-loop SGD that stops after ``cfg.max_steps``; returns params, loss, steps, rng."""
    rng = np.random.default_rng(seed)
    n, f = x.shape
    theta = np.zeros(c * (f + 1), dtype=np.float32)
    targets = one_hot(y, c)
    losses: list[float] = []
    for _ in range(cfg.epochs):
        if cfg.max_steps is not None and len(losses) >= cfg.max_steps:
            break
        perm = rng.permutation(n)
        for s in range(0, n, cfg.batch_size):
            if cfg.max_steps is not None and len(losses) >= cfg.max_steps:
                break
            idx = perm[s : s + cfg.batch_size]
            loss, g = loss_and_grad(theta, x[idx], targets[idx], l2=l2)
            theta = theta - np.float32(cfg.lr) * g
            losses.append(loss)
    return theta, sum(losses) / len(losses), len(losses), rng


@pytest.mark.parametrize("max_steps", [1, 3, 4, 5, 9, 12, 100])
def test_max_steps_stops_mid_epoch_and_draws_only_begun_epochs(max_steps: int) -> None:
    x, y = blobs(37)  # batch 10: 4 steps per epoch, the last one ragged (7 rows)
    t = LogRegTrainer(5, 3, l2=0.1)
    cfg = LocalConfig(epochs=3, batch_size=10, lr=0.3, max_steps=max_steps)
    rng = np.random.default_rng(4)
    res = t.fit(t.init_params(0), x, y, config=cfg, rng=rng)
    theta, loss, steps, ref_rng = reference_sgd(x, y, c=3, cfg=cfg, l2=0.1, seed=4)
    assert res.steps == steps == min(max_steps, 12)
    np.testing.assert_allclose(res.params, theta, rtol=1e-6, atol=1e-7)
    assert res.loss == pytest.approx(loss, rel=1e-6)
    assert rng.integers(1 << 62) == ref_rng.integers(1 << 62)  # same permutations drawn


def test_max_steps_at_an_epoch_boundary_equals_fewer_epochs() -> None:
    x, y = blobs(40)
    t = LogRegTrainer(5, 3)
    p0 = t.init_params(0)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    capped = t.fit(p0, x, y, config=LocalConfig(epochs=5, batch_size=8, max_steps=10), rng=rng_a)
    short = t.fit(p0, x, y, config=LocalConfig(epochs=2, batch_size=8), rng=rng_b)
    assert capped.steps == short.steps == 10 and capped.loss == short.loss
    assert np.array_equal(capped.params, short.params)
    assert rng_a.integers(1 << 62) == rng_b.integers(1 << 62)
