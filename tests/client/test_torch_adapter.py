"""TorchTrainer: flat params <-> module, learning, determinism, pickling and the grad hook."""

from __future__ import annotations

import functools
import multiprocessing as mp
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedlake.client.torch_adapter import (
    TorchTrainer,
    get_flat_params,
    module_spec,
    set_flat_params,
)
from fedlake.core.params import frozen
from fedlake.core.trainer import LocalConfig, Trainer
from fedlake.core.transform import Transform, identity, scale
from fedlake.models.cnn1d import cnn1d
from fedlake.models.mlp import mlp


def with_batchnorm() -> nn.Module:
    """Linear + BatchNorm: floating buffers and an integer buffer in state_dict."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)
    )


def log_softmax_net() -> nn.Module:
    """A net ending in log-probabilities, for loss='nll'."""
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.LogSoftmax(dim=1))


def mlp_trainer(**kwargs: Any) -> TorchTrainer:
    model_fn = functools.partial(mlp, 6, 3, hidden=(16,), dropout=kwargs.pop("dropout", 0.0))
    return TorchTrainer(model_fn, input_shape=(2, 3), num_classes=3, **kwargs)


def cnn_trainer(**kwargs: Any) -> TorchTrainer:
    model_fn = functools.partial(cnn1d, 4, 128, 3, channels=(8, 16))
    return TorchTrainer(model_fn, input_shape=(4, 128), num_classes=3, **kwargs)


def blobs(n: int = 240, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linearly separable blobs shaped (n, 2, 3), three classes."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(scale=3.0, size=(3, 6))
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.normal(size=(n, 6))).reshape(n, 2, 3).astype(np.float32), y


def windows(n: int = 200, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sine windows (n, 4, 128); the class sets the frequency, the phase is random."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(128) / 128
    freq = np.array([2.0, 5.0, 9.0])[y]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 4, 1))
    x = np.sin(2 * np.pi * freq[:, None, None] * t + phase) + rng.normal(
        scale=0.5, size=(n, 4, 128)
    )
    return x.astype(np.float32), y


def fit(trainer: TorchTrainer, params: np.ndarray, x: np.ndarray, y: np.ndarray, **kw: Any) -> Any:
    cfg = kw.pop("config", LocalConfig(epochs=2, batch_size=16, lr=0.1))
    return trainer.fit(params, x, y, config=cfg, rng=np.random.default_rng(kw.pop("seed", 0)), **kw)


def test_spec_follows_state_dict_floats() -> None:
    t = TorchTrainer(with_batchnorm, input_shape=(6,), num_classes=3)
    assert isinstance(t, Trainer)
    module = with_batchnorm()
    floats = [k for k, v in module.state_dict().items() if v.is_floating_point()]
    assert t.spec.names == tuple(floats)
    assert "2.running_mean" in t.spec.names and "2.num_batches_tracked" not in t.spec.names
    assert t.spec == module_spec(module)


def test_flat_params_round_trip_through_module() -> None:
    module = with_batchnorm()
    spec = module_spec(module)
    vec = np.random.default_rng(0).normal(size=spec.size).astype(np.float32)
    set_flat_params(module, spec, frozen(vec))
    assert np.array_equal(get_flat_params(module, spec), vec)
    state = module.state_dict()
    for name, arr in spec.unflatten(vec).items():
        assert np.array_equal(state[name].numpy(), arr)
    t = TorchTrainer(with_batchnorm, input_shape=(6,), num_classes=3)
    assert np.array_equal(get_flat_params(t.build_module(vec), t.spec), vec)
    with pytest.raises(ValueError, match=f"length {spec.size}"):
        set_flat_params(module, spec, vec[:-1])


def test_init_params_seeded_without_touching_global_rng() -> None:
    t = mlp_trainer()
    before = torch.get_rng_state()
    a = t.init_params(1)
    assert a.dtype == np.float32 and a.shape == (t.spec.size,)
    assert np.array_equal(a, t.init_params(1)) and not np.array_equal(a, t.init_params(2))
    x, y = blobs()
    fit(t, a, x, y)
    assert torch.equal(torch.get_rng_state(), before)


def test_mlp_learns_separable_problem() -> None:
    t = mlp_trainer()
    x, y = blobs()
    p0 = t.init_params(0)
    res = fit(t, p0, x, y, config=LocalConfig(epochs=5, batch_size=16, lr=0.1))
    assert (res.num_examples, res.steps) == (240, 5 * 15)
    assert res.params.dtype == np.float32 and res.params.shape == p0.shape
    xt, yt = blobs(seed=1)
    before, after = t.evaluate(p0, xt, yt), t.evaluate(res.params, xt, yt)
    assert after["loss"] < 0.2 * before["loss"] and after["accuracy"] > 0.97
    assert after["examples"] == 240.0
    probs = t.predict(res.params, xt)
    assert probs.dtype == np.float32 and probs.shape == (240, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.mean(probs.argmax(1) == yt) == pytest.approx(after["accuracy"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cnn_learns_sine_windows(optimizer: str) -> None:
    t = cnn_trainer(optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0)
    x, y = windows()
    lr, epochs = (0.1, 10) if optimizer == "sgd" else (0.02, 8)
    res = fit(t, t.init_params(0), x, y, config=LocalConfig(epochs=epochs, batch_size=32, lr=lr))
    assert res.steps == epochs * 7
    assert t.evaluate(res.params, *windows(seed=1))["accuracy"] > 0.9


def test_repeat_runs_are_bit_identical_and_rng_matters() -> None:
    t = mlp_trainer(dropout=0.3, momentum=0.5, weight_decay=1e-3)
    x, y = blobs()
    p0 = t.init_params(0)
    a, b = fit(t, p0, x, y, seed=3), fit(t, p0, x, y, seed=3)
    assert np.array_equal(a.params, b.params) and a.loss == b.loss
    assert not np.array_equal(a.params, fit(t, p0, x, y, seed=4).params)


def test_pickle_round_trip_drops_module_and_fits_identically() -> None:
    t = cnn_trainer()
    x, y = windows(64)
    p0 = t.init_params(0)
    expected = fit(t, p0, x, y).params  # module is now built and cached
    blob = pickle.dumps(t)
    assert len(blob) < 2_000  # the module's tensors do not travel
    clone = pickle.loads(blob)
    assert clone._bound is None and clone.spec == t.spec
    assert np.array_equal(fit(clone, p0, x, y).params, expected)
    assert np.array_equal(clone.init_params(0), p0)


def _fit_in_worker(trainer: TorchTrainer, params: np.ndarray, threads: int) -> np.ndarray:
    torch.set_num_threads(threads)  # whatever the worker's setting, the trainer pins its own
    x, y = blobs()
    return fit(trainer, params, x, y).params


def test_fit_in_spawned_process_matches_local_whatever_the_callers_threads() -> None:
    t = mlp_trainer(dropout=0.2)
    p0 = t.init_params(0)
    x, y = blobs()
    expected = fit(t, p0, x, y).params
    with mp.get_context("spawn").Pool(1) as pool:
        got = [pool.apply(_fit_in_worker, (t, p0, n)) for n in (1, 2)]
    assert all(np.array_equal(g, expected) for g in got)


def test_trainer_runs_on_its_own_threads_and_restores_the_callers() -> None:
    seen: list[int] = []
    spy = Transform(
        lambda p: None, lambda v, s, *, params, rng: (seen.append(torch.get_num_threads()) or v, s)
    )
    before = torch.get_num_threads()
    t = mlp_trainer(threads=2)
    x, y = blobs()
    fit(t, t.init_params(0), x, y, grad_transform=spy)
    assert set(seen) == {2} and torch.get_num_threads() == before


def test_zeroed_gradients_leave_params_unchanged() -> None:
    zero = Transform(lambda p: None, lambda v, s, *, params, rng: (np.zeros_like(v), s))
    t = mlp_trainer()
    x, y = blobs()
    p0 = t.init_params(0)
    res = fit(t, p0, x, y, grad_transform=zero)
    assert np.array_equal(res.params, p0) and res.steps == 30


def test_transform_sees_every_step_and_current_params() -> None:
    calls: list[dict[str, Any]] = []

    def init(params: np.ndarray) -> int:
        calls.append({"init": params.copy(), "writeable": params.flags.writeable})
        return 0

    def update(
        vec: np.ndarray, state: int, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        calls.append({"state": state, "grad": vec.copy(), "params": params.copy()})
        return vec, state + 1

    t = mlp_trainer()
    x, y = blobs(50)
    p0 = t.init_params(0)
    cfg = LocalConfig(epochs=2, batch_size=16, lr=0.5)
    res = fit(t, p0, x, y, config=cfg, grad_transform=Transform(init, update))
    assert res.steps == 8 and len(calls) == 9
    assert np.array_equal(calls[0]["init"], p0) and not calls[0]["writeable"]
    steps = calls[1:]
    assert [c["state"] for c in steps] == list(range(8))
    assert np.array_equal(steps[0]["params"], p0)
    for prev, cur in zip(steps[:-1], steps[1:], strict=True):
        np.testing.assert_allclose(cur["params"], prev["params"] - 0.5 * prev["grad"], atol=1e-6)
    assert np.array_equal(fit(t, p0, x, y, config=cfg).params, res.params)
    assert np.array_equal(
        fit(t, p0, x, y, config=cfg, grad_transform=identity()).params, res.params
    )


def test_transform_rewrites_gradient() -> None:
    t = mlp_trainer()
    x, y = blobs()
    p0 = t.init_params(0)
    halved = fit(t, p0, x, y, config=LocalConfig(lr=0.2), grad_transform=scale(0.5))
    small_lr = fit(t, p0, x, y, config=LocalConfig(lr=0.1))
    np.testing.assert_allclose(halved.params, small_lr.params, rtol=1e-5, atol=1e-6)


def test_buffers_get_zero_gradient_and_keep_running_stats() -> None:
    seen: list[np.ndarray] = []

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: Any
    ) -> tuple[np.ndarray, None]:
        seen.append(vec.copy())
        return vec, state

    t = TorchTrainer(with_batchnorm, input_shape=(2, 3), num_classes=3)
    x, y = blobs()
    p0 = t.init_params(0)
    res = fit(t, p0, x, y, grad_transform=Transform(lambda p: None, update))
    mean = t.spec.slices()["2.running_mean"]
    assert all(not g[mean].any() for g in seen)
    assert not np.array_equal(res.params[mean], p0[mean])  # running stats were updated


def test_nll_loss_and_batched_evaluation() -> None:
    t = TorchTrainer(log_softmax_net, input_shape=(2, 3), num_classes=3, loss="nll")
    x, y = blobs(2500)  # more than one evaluation batch
    p = fit(t, t.init_params(0), x, y, config=LocalConfig(epochs=1, lr=0.1)).params
    logp = t.build_module(p)(torch.from_numpy(x)).detach().numpy()
    ev = t.evaluate(p, x, y)
    assert ev["loss"] == pytest.approx(-np.mean(logp[np.arange(2500), y]), rel=1e-5)
    assert ev["accuracy"] == pytest.approx(np.mean(logp.argmax(1) == y))
    np.testing.assert_allclose(t.predict(p, x), np.exp(logp), rtol=1e-5, atol=1e-7)


def test_read_only_inputs_are_accepted_and_untouched() -> None:
    t = mlp_trainer()
    x, y = blobs()
    p0 = frozen(t.init_params(0))
    x.setflags(write=False)
    y.setflags(write=False)
    x0 = x.copy()
    res = fit(t, p0, x, y)  # torch warns on read-only numpy arrays; warnings are errors here
    assert np.array_equal(x, x0) and not np.array_equal(res.params, p0)
    t.evaluate(p0, x, y)
    t.predict(p0, x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": ()}, "input_shape must be positive integers"),
        ({"input_shape": (2, 0)}, "input_shape must be positive integers"),
        ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum applies only to optimizer='sgd'"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0, got -1.0"),
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"input_shape": (2, 3), "num_classes": 3}
    with pytest.raises(ValueError, match=match):
        TorchTrainer(log_softmax_net, **{**base, **kwargs})


def test_model_mismatch_and_bad_data_are_reported() -> None:
    with pytest.raises(TypeError, match="zero-argument callable"):
        TorchTrainer(42, input_shape=(6,), num_classes=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected \(1, 4\)"):
        _ = TorchTrainer(log_softmax_net, input_shape=(6,), num_classes=4).spec
    t = mlp_trainer()
    p0 = t.init_params(0)
    x, y = blobs(10)
    with pytest.raises(ValueError, match=r"x must be shaped \(n, \*\(2, 3\)\)"):
        fit(t, p0, x.reshape(10, 6), y)
    with pytest.raises(ValueError, match="params must have length"):
        fit(t, p0[1:], x, y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        t.evaluate(p0, x, y + 3)
    with pytest.raises(ValueError, match="at least one example"):
        fit(t, p0, x[:0], y[:0])
    bad = Transform(lambda p: None, lambda v, s, *, params, rng: (v[:5], s))
    with pytest.raises(ValueError, match="grad_transform must return shape"):
        fit(t, p0, x, y, grad_transform=bad)


@pytest.mark.parametrize("max_steps", [1, 4, 5, 7, 100])
def test_max_steps_stops_mid_epoch_and_draws_only_begun_epochs(max_steps: int) -> None:
    seen: list[np.ndarray] = []

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        seen.append(params.copy())
        return vec, state

    t = mlp_trainer(dropout=0.2)  # dropout: torch's seed is drawn from rng first
    x, y = blobs(50)  # batch 16: 4 steps per epoch, the last one ragged (2 rows)
    p0 = t.init_params(0)
    cfg = LocalConfig(epochs=3, batch_size=16, lr=0.3)
    full = fit(t, p0, x, y, config=cfg, grad_transform=Transform(lambda p: None, update))
    rng = np.random.default_rng(0)
    capped = t.fit(
        p0, x, y, config=LocalConfig(epochs=3, batch_size=16, lr=0.3, max_steps=max_steps), rng=rng
    )
    assert full.steps == 12 and capped.steps == min(max_steps, 12)
    expected = (seen + [full.params])[capped.steps]  # the params after that many steps
    np.testing.assert_array_equal(capped.params, expected)
    ref = np.random.default_rng(0)
    ref.integers(2**63 - 1)
    for _ in range(-(-capped.steps // 4)):  # one permutation per epoch begun
        ref.permutation(50)
    assert rng.integers(1 << 62) == ref.integers(1 << 62)


def test_max_steps_at_an_epoch_boundary_equals_fewer_epochs() -> None:
    t = mlp_trainer()
    x, y = blobs(50)
    p0 = t.init_params(0)
    capped = fit(t, p0, x, y, config=LocalConfig(epochs=5, batch_size=16, lr=0.3, max_steps=8))
    short = fit(t, p0, x, y, config=LocalConfig(epochs=2, batch_size=16, lr=0.3))
    assert capped.steps == short.steps == 8 and capped.loss == short.loss
    assert np.array_equal(capped.params, short.params)
