"""DP-FedAvg (fixed and adaptive clipping), local DP and the noise sources, by the numbers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from fedlake.algorithms.fedavg import fedavg
from fedlake.core.algorithm import Algorithm
from fedlake.core.state import ServerState, aggregate_updates, init_server_state
from fedlake.core.update import ClientUpdate
from fedlake.privacy.central import AdaptiveClip, DPState, dp_fedavg, value_noise_multiplier
from fedlake.privacy.local import local_gaussian, local_multiplier
from fedlake.privacy.noise import SecureNoise, SeededNoise


def round_with(agg, dim: int) -> tuple[Algorithm, ServerState]:
    """FedAvg with ``agg`` and its round-0 server state, for the round loop's path."""
    algo = dataclasses.replace(fedavg(), aggregator=agg)
    return algo, init_server_state(algo, np.zeros(dim, np.float32), seed=0)


def upd(cid: str, vec) -> ClientUpdate:
    return ClientUpdate(
        client_id=cid, vectors={"delta": np.asarray(vec, np.float32)}, weight=1.0, metrics={}
    )


def test_clip_sum_divide_exact_without_noise() -> None:
    # norms 2, 0.5, 40 -> clipped to 1, 0.5, 1; sum / fixed denominator 4 (not the count 3)
    ups = [upd("a", [2, 0]), upd("b", [0, 0.5]), upd("c", [0, -40])]
    agg = dp_fedavg(clip=1.0, noise_multiplier=1e-12, denominator=4, secure_noise=False)
    out, state = agg.aggregate(ups, agg.init(2))
    np.testing.assert_allclose(out, [1 / 4, (0.5 - 1) / 4], atol=1e-9)
    assert state == DPState(released=1, clip=1.0)


def test_fold_equals_aggregate_and_streams() -> None:
    rng = np.random.default_rng(0)
    ups = [upd(str(i), rng.normal(size=50) * (i + 1)) for i in range(7)]
    agg = dp_fedavg(clip=3.0, noise_multiplier=0.7, denominator=7, seed=5, secure_noise=False)
    a, _ = agg.aggregate(ups, agg.init(50))
    algo, state = round_with(agg, 50)
    assert state.aggregator_state == agg.init(50)
    got = aggregate_updates(algo, state, iter(ups))  # the round loop's path
    assert set(got.vectors) == {"delta"}
    np.testing.assert_allclose(a, got.delta, rtol=1e-6, atol=1e-7)
    assert got.num_updates == 7


def test_noise_on_the_aggregate_has_the_configured_std() -> None:
    # every client sends 0: the output is pure noise, std z * clip / denominator
    d, z, clip, denom = 200_000, 1.3, 0.5, 10.0
    agg = dp_fedavg(clip=clip, noise_multiplier=z, denominator=denom, secure_noise=True)
    out, _ = agg.aggregate([upd("a", np.zeros(d))], agg.init(d))
    expected = z * clip / denom
    assert abs(float(np.std(out)) / expected - 1) < 0.01  # 200k draws: sd error ~0.16%
    assert abs(float(np.mean(out))) < 5 * expected / math.sqrt(d)
    assert stats.normaltest(out.astype(np.float64)).pvalue > 1e-3


def test_clipping_bounds_every_clients_contribution() -> None:
    # swapping one client for an arbitrary one moves the noiseless result by <= clip/denom
    rng = np.random.default_rng(1)
    base = [upd(str(i), rng.normal(size=20)) for i in range(5)]
    agg = dp_fedavg(clip=0.8, noise_multiplier=1e-12, denominator=5, secure_noise=False)
    ref, _ = agg.aggregate(base, agg.init(20))
    for scale in (1e-3, 1.0, 1e3, 1e9):
        other = [*base[:4], upd("x", rng.normal(size=20) * scale)]
        out, _ = agg.aggregate(other, agg.init(20))
        assert np.linalg.norm(out.astype(np.float64) - ref) <= 2 * 0.8 / 5 + 1e-6
        fewer, _ = agg.aggregate(base[:4], agg.init(20))  # add/remove: <= clip / denom
        assert np.linalg.norm(fewer.astype(np.float64) - ref) <= 0.8 / 5 + 1e-6


def test_seeded_noise_is_reproducible_per_round_and_secure_is_not() -> None:
    ups = [upd("a", np.zeros(100))]
    seeded = dp_fedavg(clip=1, noise_multiplier=1, denominator=1, seed=3, secure_noise=False)
    a1, s1 = seeded.aggregate(ups, seeded.init(100))
    a2, _ = seeded.aggregate(ups, seeded.init(100))
    b, _ = seeded.aggregate(ups, s1)  # next round: new noise
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, b)
    secure = dp_fedavg(clip=1, noise_multiplier=1, denominator=1, secure_noise=True)
    c1, _ = secure.aggregate(ups, secure.init(100))
    c2, _ = secure.aggregate(ups, secure.init(100))
    assert not np.allclose(c1, c2)


def test_adaptive_clip_moves_towards_the_target_quantile() -> None:
    # all norms 10 with clip 1: none within -> fraction ~0 -> clip *= exp(0.2 * 0.5)
    ups = [upd(str(i), [10.0, 0.0]) for i in range(100)]
    agg = dp_fedavg(
        clip=1.0,
        noise_multiplier=1.0,
        denominator=100,
        secure_noise=False,
        adaptive=AdaptiveClip(count_noise=1.0),  # fraction noise std 0.01
    )
    state = agg.init(2)
    for _ in range(3):
        _, state = agg.aggregate(ups, state)
    assert state.clip == pytest.approx(math.exp(0.2 * 0.5 * 3), rel=0.03)
    clips = []
    for _ in range(60):  # converges to the norms (10), then oscillates around them
        _, state = agg.aggregate(ups, state)
        clips.append(state.clip)
    assert 10 * math.exp(-0.15) <= clips[-1] <= 10 * math.exp(0.15)


def test_adaptive_value_noise_is_the_corrected_multiplier() -> None:
    # Andrew et al.: z_value = (z^-2 - (2 sigma_b)^-2)^-1/2
    assert value_noise_multiplier(1.0, 5.0) == pytest.approx((1 - 0.01) ** -0.5)
    with pytest.raises(ValueError, match=r"noise_multiplier \(2.0\) must be < 2 x the count"):
        dp_fedavg(
            clip=0.1, noise_multiplier=2.0, denominator=10, adaptive=AdaptiveClip(count_noise=0.5)
        )
    # by default the count noise is max(m / 20, z): a large z still works, its value
    # noise 2 / sqrt(3) x larger at most
    agg = dp_fedavg(clip=0.1, noise_multiplier=2.0, denominator=10, adaptive=AdaptiveClip())
    assert agg.name == "dp_fedavg(adaptive)"
    assert value_noise_multiplier(2.0, 2.0) == pytest.approx(2.0 * 2 / math.sqrt(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip": 0.0, "noise_multiplier": 1, "denominator": 1}, "clip must be"),
        ({"clip": 1, "noise_multiplier": 0, "denominator": 1}, "noise_multiplier must be"),
        ({"clip": 1, "noise_multiplier": -1, "denominator": 1}, "noise_multiplier must be"),
        ({"clip": 1, "noise_multiplier": 1, "denominator": 0}, "denominator must be"),
    ],
)
def test_bad_values_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        dp_fedavg(**kwargs)


def test_adaptive_hyperparameters_checked() -> None:
    with pytest.raises(ValueError, match="target_quantile"):
        AdaptiveClip(target_quantile=1.0)
    with pytest.raises(ValueError, match="clip_lr"):
        AdaptiveClip(clip_lr=0)


def test_local_dp_clips_then_noises() -> None:
    t = local_gaussian(clip=2.0, noise_multiplier=1e-12, secure_noise=False)
    out, _ = t.update(
        np.array([30.0, 40.0], np.float32), None, params=np.zeros(2), rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(out, [1.2, 1.6], rtol=1e-6)  # norm 50 -> 2
    t = local_gaussian(clip=2.0, noise_multiplier=0.5, secure_noise=True)
    out, _ = t.update(np.zeros(100_000, np.float32), None, params=np.zeros(1), rng=None)
    assert abs(float(np.std(out)) / (0.5 * 2.0) - 1) < 0.015
    assert local_multiplier(3.0) == 1.5  # replace-one: sensitivity 2 clip


def test_secure_noise_is_standard_normal() -> None:
    x = SecureNoise().normal(100_001, 1.0)
    assert x.shape == (100_001,)
    assert stats.kstest(x, "norm").pvalue > 1e-3
    y = SeededNoise(np.random.default_rng(4)).normal(10, 2.0)
    np.testing.assert_array_equal(y, np.random.default_rng(4).normal(0, 2.0, 10))


def test_adaptive_count_moves_by_half_per_user() -> None:
    # the centred bit b - 1/2: adding or removing one user moves the count sum by 1/2,
    # the sensitivity behind Andrew et al.'s noise split z^-2 = z_value^-2 + (2 sigma_b)^-2
    agg = dp_fedavg(
        clip=1.0, noise_multiplier=1.0, denominator=4, secure_noise=False, adaptive=AdaptiveClip()
    )
    inside, outside = upd("in", [0.5, 0]), upd("out", [5.0, 0])
    acc = agg.fold.start(2)
    acc.state = agg.init(2)
    agg.fold.add(acc, inside)
    assert acc.weight == 0.5
    agg.fold.add(acc, outside)
    assert acc.weight == 0.0


def test_an_empty_poisson_round_releases_noise_only() -> None:
    agg = dp_fedavg(clip=1.0, noise_multiplier=1.0, denominator=5, secure_noise=False)
    algo, state = round_with(agg, 1000)
    got = aggregate_updates(algo, state, iter([]))
    assert got.num_updates == 0 and got.aggregator_state.released == 1
    assert abs(float(np.std(got.delta)) / (1.0 / 5) - 1) < 0.1


def test_the_fold_refuses_to_run_without_the_rounds_state_once_the_clip_moved() -> None:
    agg = dp_fedavg(clip=1.0, noise_multiplier=1.0, denominator=2, adaptive=AdaptiveClip())
    moved = DPState(released=3, clip=2.5)
    acc = agg.fold.start(2)  # acc.state never set: it would clip at 1.0, noise for 2.5
    agg.fold.add(acc, upd("a", [3.0, 0]))
    with pytest.raises(ValueError, match="needs the round's state"):
        agg.fold.result(acc, moved)
