"""FedNova (Wang et al., NeurIPS 2020): golden numbers, streaming, invariance, bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.aggregators.fednova import fednova, norm_a
from fedlake.aggregators.mean import fold_all, weighted_mean
from fedlake.core.algorithm import Algorithm, LocalConfig
from fedlake.core.state import init_server_state, server_round
from fedlake.core.update import ClientUpdate
from fedlake.transforms import fedadam


def upd(cid, delta, weight, steps):
    metrics = {} if steps is None else {"steps": steps}
    return ClientUpdate(cid, {"delta": np.asarray(delta, np.float32)}, float(weight), metrics)


# (delta, weight p_i, steps tau_i)
A = upd("a", [2.0, 0.0], 1, 2.0)
B = upd("b", [0.0, 4.0], 3, 4.0)
C = upd("c", [-1.0, 1.0], 2, 1.0)


def both(agg, ups, dim=2):
    """The batch and the streaming result."""
    batch, _ = agg.aggregate(ups, agg.init(dim))
    stream, _ = fold_all(agg, ups, dim, agg.init(dim))
    assert batch.dtype == stream.dtype == np.float32
    return batch, stream


def test_two_clients_golden_numbers():
    # d = (1 [2, 0] / 2 + 3 [0, 4] / 4) / 4 = [0.25, 0.75]; tau_eff = (1*2 + 3*4) / 4 = 3.5
    for vec in both(fednova(), [A, B]):
        np.testing.assert_array_equal(vec, [0.875, 2.625])
    mean, _ = weighted_mean().aggregate([A, B], None)
    np.testing.assert_array_equal(mean, [0.5, 3.0])  # the straggler-biased FedAvg answer


def test_three_clients_golden_numbers():
    # sum p_i delta_i / a_i = [1, 0] + [0, 3] + [-2, 2] = [-1, 5]; P = 6; tau_eff = 16 / 6
    # result = (16 / 6) * [-1, 5] / 6 = [-4 / 9, 20 / 9]
    for vec in both(fednova(), [A, B, C]):
        np.testing.assert_allclose(vec, [-4 / 9, 20 / 9], rtol=1e-7)


def test_proximal_a_i():
    # eta * mu = 0.1: a(tau) = (1 - 0.9 ** tau) / 0.1
    assert norm_a(1, client_lr=0.1, mu=1.0) == pytest.approx(1.0, rel=1e-14)
    assert norm_a(2, client_lr=0.1, mu=1.0) == pytest.approx(1.9, rel=1e-14)
    assert norm_a(4, client_lr=0.1, mu=1.0) == pytest.approx(3.439, rel=1e-14)
    assert norm_a(4, client_lr=0.5, mu=0.0) == 4.0
    # tiny eta * mu: a -> tau - eta mu tau (tau - 1) / 2, no cancellation
    assert norm_a(10, client_lr=1e-6, mu=1e-6) == pytest.approx(10 - 45e-12, rel=1e-15)


def test_proximal_golden_numbers():
    # a_A = 1.9, a_B = 3.439; tau_eff = (1.9 + 3 * 3.439) / 4 = 3.05425
    # result = tau_eff * ([2 / 1.9, 0] + [0, 3 * 4 / 3.439]) / 4
    expected = 3.05425 * np.array([2 / 1.9, 12 / 3.439]) / 4
    for vec in both(fednova(client_lr=0.1, mu=1.0), [A, B]):
        np.testing.assert_allclose(vec, expected, rtol=1e-6)
    assert expected[0] == pytest.approx(0.80375)


def cohort(n=12, d=20, seed=0, steps=None):
    rng = np.random.default_rng(seed)
    return [
        upd(
            f"c{i}",
            rng.normal(size=d),
            int(rng.integers(1, 100)),
            float(rng.integers(1, 30)) if steps is None else steps,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_fold_equals_aggregate(mu):
    agg = fednova(client_lr=0.05, mu=mu)
    batch, stream = both(agg, cohort(), dim=20)
    np.testing.assert_allclose(stream, batch, rtol=1e-6, atol=1e-7)
    assert agg.linear and agg.fold is not None and agg.name == "fednova"


@pytest.mark.parametrize("steps", [1.0, 7.0, 250.0])
@pytest.mark.parametrize("mu", [0.0, 0.3])
def test_equal_steps_is_exactly_the_weighted_mean(steps, mu):
    ups = cohort(steps=steps, seed=int(steps))
    nova = fednova(client_lr=0.1, mu=mu)
    mean = weighted_mean()
    np.testing.assert_array_equal(nova.aggregate(ups, None)[0], mean.aggregate(ups, None)[0])
    np.testing.assert_array_equal(
        fold_all(nova, ups, 20, None)[0], fold_all(mean, ups, 20, None)[0]
    )


def test_scaling_all_steps_changes_nothing():
    # a_i -> k a_i scales d by 1/k and tau_eff by k (plain SGD)
    ups = cohort(n=5, d=4)
    doubled = [upd(u.client_id, u.delta, u.weight, 2 * u.metrics["steps"]) for u in ups]
    np.testing.assert_allclose(
        fednova().aggregate(doubled, None)[0], fednova().aggregate(ups, None)[0], rtol=1e-6
    )


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(6))))
def test_permutation_invariance(order):
    ups = cohort(n=6, d=8, seed=1)
    agg = fednova(client_lr=0.1, mu=0.2)
    a, _ = agg.aggregate(ups, None)
    b, _ = agg.aggregate([ups[i] for i in order], None)
    c, _ = fold_all(agg, [ups[i] for i in order], 8, None)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-7)


def test_inputs_untouched():
    ups = [A, B, C]
    kept = [u.delta.copy() for u in ups]
    both(fednova(), ups)
    for u, k in zip(ups, kept, strict=True):
        np.testing.assert_array_equal(u.delta, k)


def test_server_round_streams_fednova_into_a_server_optimiser():
    algo = Algorithm(name="fednova", local=LocalConfig(), aggregator=fednova(), server=fedadam())
    state = init_server_state(algo, np.zeros(2, np.float32), seed=0)
    new, metrics = server_round(algo, state, iter([A, B]))  # a generator: the fold path
    np.testing.assert_allclose(metrics["update_norm"], math.hypot(0.875, 2.625), rtol=1e-7)
    # fedadam's first step: 0.1 * 0.1 x / (sqrt(0.01 x^2 + 0.99e-6) + 1e-3)
    x = np.array([0.875, 2.625])
    expected = 0.01 * x / (np.sqrt(0.01 * x**2 + 0.99e-6) + 1e-3)
    np.testing.assert_allclose(new.params, expected, rtol=1e-6)


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, True, "0.1"])
def test_bad_client_lr(lr):
    with pytest.raises(ValueError, match=r"client_lr must be a finite number > 0, got"):
        fednova(client_lr=lr)


@pytest.mark.parametrize("mu", [-0.1, math.nan, math.inf, True, "0", None])
def test_bad_mu(mu):
    with pytest.raises(ValueError, match=r"mu must be a finite number >= 0, got"):
        fednova(mu=mu)


@pytest.mark.parametrize(("lr", "mu"), [(0.1, 10.0), (1.0, 1.0), (0.5, 5.0)])
def test_contraction_required(lr, mu):
    with pytest.raises(ValueError, match=r"client_lr \* mu must be < 1"):
        fednova(client_lr=lr, mu=mu)


@pytest.mark.parametrize("steps", [None, 0, 0.0, -3.0, math.nan, math.inf, True, "4"])
def test_update_without_steps_names_the_client(steps):
    bad = upd("straggler-7", [1.0, 1.0], 1, steps)
    agg = fednova()
    with pytest.raises(ValueError, match=r"client 'straggler-7'.*got"):
        agg.aggregate([A, bad], None)
    with pytest.raises(ValueError, match=r"client 'straggler-7'"):
        fold_all(agg, [A, bad], 2, None)


def test_empty_cohort():
    with pytest.raises(ValueError, match="empty"):
        fednova().aggregate([], None)
    with pytest.raises(ValueError, match="empty"):
        fold_all(fednova(), [], 2, None)
