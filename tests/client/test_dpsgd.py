"""DP-SGD in local training: per-example plumbing, clipping, noise scale, seeding, metrics."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedlake.algorithms.fedavg import fedavg
from fedlake.client.dpsgd import (
    clip_and_sum,
    poisson_sample,
    privatize,
    sampling_rate,
    steps_per_epoch,
)
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.runtime import ClientRuntime
from fedlake.client.torch_adapter import TorchTrainer
from fedlake.compression.messages import encode_model
from fedlake.core.algorithm import LocalConfig, SampleDP
from fedlake.core.task import ClientReply, ClientTask
from fedlake.core.transform import Transform
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.models.cnn1d import cnn1d
from fedlake.models.mlp import mlp
from fedlake.plugins.dpsgd_budget import dpsgd_budget
from fedlake.privacy.noise import SecureNoise


def mlp_trainer(hidden: tuple[int, ...] = (16,)) -> TorchTrainer:
    return TorchTrainer(
        functools.partial(mlp, 6, 3, hidden=hidden), input_shape=(6,), num_classes=3
    )


def blobs(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(scale=2.0, size=(3, 6))
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.normal(size=(n, 6))).astype(np.float32), y


def recorder() -> tuple[Transform, list[np.ndarray]]:
    """A grad_transform that records every (already noised) step gradient, unchanged."""
    seen: list[np.ndarray] = []

    def update(v, s, *, params, rng):
        seen.append(np.array(v, dtype=np.float64))
        return v, s

    return Transform(lambda p: None, update), seen


def dp_config(z: float, c: float, *, secure: bool = False, **kw) -> LocalConfig:
    return LocalConfig(dp=SampleDP(z, c, secure_noise=secure), **kw)


# (a) per-example plumbing -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn1d"])
def test_full_batch_dpsgd_without_clipping_or_noise_is_full_batch_sgd(kind):
    if kind == "mlp":
        trainer, (x, y) = mlp_trainer(), blobs(48)
    else:
        fn = functools.partial(cnn1d, 2, 16, 3, channels=(4, 8), kernel_size=3)
        trainer = TorchTrainer(fn, input_shape=(2, 16), num_classes=3)
        x = np.random.default_rng(1).normal(size=(48, 2, 16)).astype(np.float32)
        y = np.random.default_rng(2).integers(0, 3, 48)
    p0 = trainer.init_params(0)
    n = len(y)
    # q = 1 (batch_size = n), a clip no example reaches, noise std 1e-9 * 1e3 / n
    dp = trainer.fit(
        p0,
        x,
        y,
        config=dp_config(1e-9, 1e3, epochs=3, batch_size=n, lr=0.5),
        rng=np.random.default_rng(0),
    )
    plain = trainer.fit(
        p0, x, y, config=LocalConfig(epochs=3, batch_size=n, lr=0.5), rng=np.random.default_rng(0)
    )
    assert dp.steps == plain.steps == 3
    assert np.abs(plain.params - p0).max() > 1e-2  # it did move
    np.testing.assert_allclose(dp.params, plain.params, rtol=0, atol=2e-6)
    assert dp.loss == pytest.approx(plain.loss, rel=1e-5)


# (b) clipping ---------------------------------------------------------------------------


def test_clip_and_sum_clips_each_example_jointly_over_tensors():
    rng = np.random.default_rng(0)
    g1 = torch.from_numpy(rng.normal(size=(5, 3, 2)))
    g2 = torch.from_numpy(rng.normal(size=(5, 4)))
    g1[2] *= 1e4  # one example with a huge gradient
    c = 1.5
    for i in range(5):  # one example at a time: its clipped norm is min(norm, C)
        out = clip_and_sum([g1[i : i + 1], g2[i : i + 1]], c)
        norm = math.sqrt(sum(float(t.pow(2).sum()) for t in out))
        raw = math.sqrt(float(g1[i].pow(2).sum() + g2[i].pow(2).sum()))
        assert norm == pytest.approx(min(raw, c), rel=1e-12)
    total = clip_and_sum([g1, g2], c)  # the batch sum is the sum of the clipped examples
    parts = [clip_and_sum([g1[i : i + 1], g2[i : i + 1]], c) for i in range(5)]
    for k in range(2):
        np.testing.assert_allclose(total[k], sum(p[k] for p in parts), rtol=1e-12)


def test_one_huge_example_moves_the_full_batch_step_by_at_most_c():
    trainer = mlp_trainer()
    x, y = blobs(32)
    x[7] *= 1e4  # its raw gradient norm is in the thousands
    p0, c = trainer.init_params(0), 0.5
    spy, grads = recorder()
    trainer.fit(
        p0,
        x,
        y,
        config=dp_config(1e-9, c, epochs=4, batch_size=32, lr=0.01),
        rng=np.random.default_rng(0),
        grad_transform=spy,
    )
    raw_spy, raw = recorder()
    trainer.fit(
        p0,
        x,
        y,
        config=LocalConfig(epochs=1, batch_size=32, lr=0.01),
        rng=np.random.default_rng(0),
        grad_transform=raw_spy,
    )
    assert np.linalg.norm(raw[0]) > 100 * c  # clipping has work to do
    assert len(grads) == 4
    for g in grads:  # q = 1: C * (#sampled = n) / (q n) = C
        assert np.linalg.norm(g) <= c * (1 + 1e-5)


def sampled_counts(*, secure: bool, seed: int, n: int = 40, bsz: int = 10, c: float = 0.25):
    """Per-step gradient norms times q n / C, on identical rows whose gradients all clip.

    Every clipped example then contributes the same vector of norm C, so a step's gradient
    norm is C * (#sampled) / (q n): these values are the batch sizes.
    """
    x = np.tile(np.float32([3e3, -2e3, 1e3, 0.5e3, -1e3, 2e3]), (n, 1))
    y = np.zeros(n, np.int64)
    spy, grads = recorder()
    trainer = mlp_trainer()
    res = trainer.fit(
        trainer.init_params(0),
        x,
        y,
        config=dp_config(1e-9, c, secure=secure, epochs=10, batch_size=bsz, lr=1e-6),
        rng=np.random.default_rng(seed),
        grad_transform=spy,
    )
    assert res.steps == len(grads) == 10 * round(n / bsz)
    return np.array([np.linalg.norm(g) * bsz / c for g in grads])  # q n = bsz


def test_step_gradient_is_c_times_sampled_over_expected_batch():
    counts = sampled_counts(secure=False, seed=3)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert counts.min() >= 0 and counts.max() <= 40
    assert len(set(np.round(counts))) > 3  # Poisson batches vary in size
    assert abs(counts.mean() - 10) < 2.5  # E[#sampled] = q n = 10 (std of the mean ~0.43)


def test_secure_mode_batches_do_not_follow_the_round_seed():
    seeded = [sampled_counts(secure=False, seed=3) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    secure = [np.round(sampled_counts(secure=True, seed=3)) for _ in range(2)]
    assert not np.array_equal(secure[0], secure[1])


# (c) noise scale ------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
def test_step_noise_has_std_z_c_over_expected_batch(secure):
    # z = 1000: the clipped signal (norm <= C * #sampled / (q n)) is negligible next to
    # the noise, whose per-coordinate std must be z C / (q n).
    n, bsz, z, c = 100, 25, 1000.0, 0.1
    x, y = blobs(n)
    trainer = mlp_trainer(hidden=(256,))
    spy, grads = recorder()
    trainer.fit(
        trainer.init_params(0),
        x,
        y,
        config=dp_config(z, c, secure=secure, epochs=1, batch_size=bsz, lr=1e-9),
        rng=np.random.default_rng(0),
        grad_transform=spy,
    )
    noise = np.concatenate(grads)
    expected = z * c / (bsz / n * n)
    assert noise.size == 4 * trainer.spec.size  # round(100 / 25) steps
    assert noise.std() == pytest.approx(expected, rel=0.03)
    assert abs(noise.mean()) < 0.05 * expected


def test_privatize_noise_std_and_fixed_denominator():
    dp = SampleDP(noise_multiplier=1.3, max_grad_norm=0.7)
    out = privatize(np.zeros(200_000), dp, SecureNoise(), expected_batch=25.0)
    assert out.std() == pytest.approx(1.3 * 0.7 / 25.0, rel=0.01)
    signal = privatize(np.full(3, 50.0), SampleDP(1e-12, 1.0), SecureNoise(), 25.0)
    np.testing.assert_allclose(signal, 2.0, rtol=1e-9)


def test_empty_batches_still_add_noise():
    n = 200
    x, y = blobs(n)
    spy, grads = recorder()
    trainer = mlp_trainer()
    res = trainer.fit(
        trainer.init_params(0),
        x,
        y,
        config=dp_config(1.0, 1.0, epochs=1, batch_size=1, lr=0.01),
        rng=np.random.default_rng(0),
        grad_transform=spy,
    )
    sizes = [poisson_sample(n, 1 / n, np.random.default_rng(s)).size for s in range(400)]
    assert sizes.count(0) > 100  # at q = 1/n about e^-1 of the batches are empty
    assert res.steps == len(grads) == n
    assert all(np.count_nonzero(g) == trainer.spec.size for g in grads)
    assert np.isfinite(res.loss)


def test_poisson_sample_rate():
    for rng in (np.random.default_rng(0), None):
        kept = poisson_sample(100_000, 0.3, rng)
        assert kept.size / 100_000 == pytest.approx(0.3, abs=0.006)
        assert np.all(np.diff(kept) > 0)
    assert poisson_sample(50, 1.0, None).size == 50


# (d) seeding ----------------------------------------------------------------------------


def test_seeded_noise_is_reproducible_and_secure_noise_is_not():
    trainer = mlp_trainer()
    x, y = blobs(60)
    p0 = trainer.init_params(0)

    def run(secure: bool, seed: int) -> np.ndarray:
        cfg = dp_config(1.0, 1.0, secure=secure, epochs=2, batch_size=15, lr=0.1)
        return trainer.fit(p0, x, y, config=cfg, rng=np.random.default_rng(seed)).params

    np.testing.assert_array_equal(run(False, 5), run(False, 5))
    assert not np.allclose(run(False, 5), run(False, 6))
    a, b = run(True, 5), run(True, 5)
    assert np.abs(a - b).max() > 1e-3


# (e) metrics through the client runtime -------------------------------------------------


def test_the_runtime_reports_dp_facts():
    n, bsz, epochs = 90, 20, 2
    x, y = blobs(n)
    data = InMemoryClientData({"c0": ClientDataset(x, y, x[:5], y[:5])})
    trainer = mlp_trainer()
    base = fedavg(batch_size=bsz, local_epochs=epochs)
    dp = SampleDP(noise_multiplier=0.8, max_grad_norm=1.2, secure_noise=False)
    algo = dataclasses.replace(
        base, local=dataclasses.replace(base.local, dp=dp), client_plugins=(dpsgd_budget(dp),)
    )
    model = encode_model(trainer.init_params(0), None, None, np.random.default_rng(0))
    task = ClientTask(round=0, attempt=0, seed=0, model=model)
    reply = ClientRuntime(data, trainer, algo).handle(task, "c0")
    assert isinstance(reply, ClientReply), reply
    m = reply.metrics
    assert m["dp_sampling_rate"] == pytest.approx(bsz / n)
    assert m["dp_steps"] == m["steps"] == epochs * 4  # round(4.5) == 4: half to even
    assert m["dp_noise_multiplier"] == 0.8 and m["dp_max_grad_norm"] == 1.2
    assert m["dp_secure_noise"] == 0.0
    plain = ClientRuntime(data, trainer, base).handle(task, "c0")
    assert isinstance(plain, ClientReply), plain
    assert not any(k.startswith("dp_") for k in plain.metrics)


def test_steps_and_rate_conventions():
    assert [steps_per_epoch(100, b) for b in (40, 30, 100, 300)] == [2, 3, 1, 1]
    assert sampling_rate(100, 40) == 0.4 and sampling_rate(100, 300) == 1.0
    with pytest.raises(ValueError, match="batch_size"):
        sampling_rate(0, 4)


# (f, g) refusals ------------------------------------------------------------------------


def test_logreg_refuses_dpsgd():
    x, y = blobs(10)
    with pytest.raises(ValueError, match=r"DP-SGD needs a torch model \(mlp, cnn1d\).*central"):
        LogRegTrainer(6, 3).fit(
            np.zeros(21, np.float32), x, y, config=dp_config(1.0, 1.0), rng=np.random.default_rng(0)
        )


def test_batchnorm_models_are_refused_and_the_module_is_left_clean():
    bn = TorchTrainer(
        lambda: nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
        input_shape=(6,),
        num_classes=3,
    )
    x, y = blobs(20)
    with pytest.raises(ValueError, match="BatchNorm"):
        bn.fit(bn.init_params(0), x, y, config=dp_config(1.0, 1.0), rng=np.random.default_rng(0))
    trainer, fresh = mlp_trainer(), mlp_trainer()
    p0, cfg = trainer.init_params(0), LocalConfig(batch_size=8)
    trainer.fit(p0, x, y, config=dp_config(1.0, 1.0), rng=np.random.default_rng(0))
    module = trainer._get_bound().module
    assert not hasattr(module, "autograd_grad_sample_hooks")
    assert not any(hasattr(p, "grad_sample") for p in module.parameters())
    after = trainer.fit(p0, x, y, config=cfg, rng=np.random.default_rng(1)).params
    np.testing.assert_array_equal(
        after, fresh.fit(p0, x, y, config=cfg, rng=np.random.default_rng(1)).params
    )


@pytest.mark.parametrize("field", ["noise_multiplier", "max_grad_norm"])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True, "1"])
def test_sample_dp_rejects_bad_values(field, bad):
    kwargs = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, field: bad}
    with pytest.raises(ValueError, match=rf"{field} must be a finite number in \(0, inf\), got"):
        SampleDP(**kwargs)


def test_max_steps_caps_dpsgd_and_its_reported_privacy_steps():
    trainer = mlp_trainer()
    x, y = blobs(60)  # batch 15: 4 steps per epoch
    p0 = trainer.init_params(0)
    seen: list[np.ndarray] = []

    def update(v, s, *, params, rng):
        seen.append(params.copy())
        return v, s

    full = trainer.fit(
        p0,
        x,
        y,
        config=dp_config(1.0, 1.0, epochs=2, batch_size=15, lr=0.1),
        rng=np.random.default_rng(3),
        grad_transform=Transform(lambda p: None, update),
    )
    cfg = dp_config(1.0, 1.0, epochs=2, batch_size=15, lr=0.1, max_steps=3)
    capped = trainer.fit(p0, x, y, config=cfg, rng=np.random.default_rng(3))
    assert full.steps == 8 and full.privacy["steps"] == 8.0
    assert capped.steps == 3 and capped.privacy["steps"] == 3.0
    np.testing.assert_array_equal(capped.params, seen[3])  # the params after 3 steps
    cfg = dp_config(1.0, 1.0, epochs=2, batch_size=15, lr=0.1, max_steps=50)
    assert trainer.fit(p0, x, y, config=cfg, rng=np.random.default_rng(3)).steps == 8


def test_dpsgd_without_its_budget_plugin_is_refused():
    base = fedavg(batch_size=20)
    dp = SampleDP(noise_multiplier=0.8, max_grad_norm=1.2, epsilon=2.0)
    with pytest.raises(ValueError, match="DP-SGD .* needs its client budget plugin"):
        dataclasses.replace(base, local=dataclasses.replace(base.local, dp=dp))
