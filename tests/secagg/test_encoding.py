"""Fixed point: never wraps silently, counts clipping, unbiased rounding, a checked bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.secagg.encoding import FixedPoint, fixed_point, required_bits
from fedlake.secagg.ring import dtype_for, reduce


def ring_sum(vectors, bits):
    total = np.zeros_like(vectors[0])
    for v in vectors:
        total = reduce(total + v, bits)
    return total


def test_required_bits_is_tight():
    # 10 clients x ceil(1 x 1 x 1000) = 10_000: need 2 x 10_000 < 2^b, b = 15.
    assert required_bits(clip=1.0, scale=1000.0, clients=10) == 15
    assert 2 * 10 * 1000 < 2**15 and not 2 * 10 * 1000 < 2**14
    assert required_bits(clip=0.5, scale=8.0, clients=4, max_weight=2.0) == 7  # 64 < 2^7


def test_too_small_ring_is_refused_with_the_numbers():
    with pytest.raises(ValueError) as excinfo:
        FixedPoint(clip=1.0, scale=2.0**20, bits=16, clients=100)
    message = str(excinfo.value)
    assert "R = 2^16 is too small" in message and "100 clients" in message
    assert ">= 28 bits" in message and "use bits=32" in message
    with pytest.raises(ValueError, match="lower the scale"):
        FixedPoint(clip=1.0, scale=2.0**40, bits=64, clients=2**30)


def test_float_precision_limit_is_refused():
    with pytest.raises(ValueError, match="<= 2\\^52 for exact float64"):
        FixedPoint(clip=1.0, scale=2.0**53, bits=64, clients=1)


@pytest.mark.parametrize("bits", [16, 32, 64])
@pytest.mark.parametrize("clients", [1, 7, 1000])
def test_chosen_scale_is_the_largest_power_of_two_that_fits(bits, clients):
    fp = fixed_point(clip=3.0, bits=bits, clients=clients, max_weight=5.0)
    assert required_bits(clip=3.0, scale=fp.scale, clients=clients, max_weight=5.0) <= bits
    assert (
        fp.magnitude * 2 > 2**52
        or required_bits(clip=3.0, scale=2 * fp.scale, clients=clients, max_weight=5.0) > bits
    )


def test_worst_case_sums_do_not_wrap():
    fp = fixed_point(clip=1.0, bits=16, clients=50, max_weight=3.0)
    rng = np.random.default_rng(0)
    for sign in (1.0, -1.0):
        encoded = [fp.encode(np.full(4, 10.0 * sign), weight=3.0, rng=rng) for _ in range(50)]
        assert all(e.clipped == 4 for e in encoded)
        total = ring_sum([e.values for e in encoded], 16)
        decoded = fp.decode(total, total_weight=150.0)
        np.testing.assert_allclose(decoded, sign, atol=fp.error_bound(clients=50, total_weight=150))


def test_clipping_is_counted_and_applied():
    fp = fixed_point(clip=1.0, bits=32, clients=1)
    out = fp.encode(np.array([0.5, -3.0, 2.0, 1.0]), weight=1.0, rng=np.random.default_rng(0))
    assert out.clipped == 2
    decoded = fp.decode(out.values, total_weight=1.0)
    np.testing.assert_allclose(decoded, [0.5, -1.0, 1.0, 1.0], atol=1 / fp.scale)


def test_stochastic_rounding_is_unbiased():
    fp = FixedPoint(clip=1.0, scale=4.0, bits=32, clients=1)  # coarse on purpose
    rng = np.random.default_rng(1)
    x = np.full(20_000, 0.3)  # 1.2 levels: rounds to 1 w.p. 0.8, to 2 w.p. 0.2
    decoded = fp.decode(fp.encode(x, weight=1.0, rng=rng).values, total_weight=1.0)
    assert set(np.unique(decoded)) == {0.25, 0.5}
    assert abs(decoded.mean() - 0.3) < 0.005  # sd of the mean: 0.1 / sqrt(20000) * 2.5


@settings(max_examples=25, deadline=None)
@given(
    clients=st.integers(1, 30),
    bits=st.sampled_from([24, 32, 64]),
    clip=st.floats(0.01, 100.0),
    max_weight=st.floats(1.0, 1000.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoded_weighted_mean_is_within_the_bound(clients, bits, clip, max_weight, seed):
    fp = fixed_point(clip=clip, bits=bits, clients=clients, max_weight=max_weight)
    rng = np.random.default_rng(seed)
    xs = rng.normal(0, clip, size=(clients, 16))
    weights = rng.uniform(0.01, 1.0, size=clients) * max_weight
    encoded = [fp.encode(x, weight=w, rng=rng) for x, w in zip(xs, weights, strict=True)]
    total = ring_sum([e.values for e in encoded], bits)
    decoded = fp.decode(total, total_weight=float(weights.sum()))
    clipped = np.clip(xs, -clip, clip)
    mean = (weights[:, None] * clipped).sum(axis=0) / weights.sum()
    bound = fp.error_bound(clients=clients, total_weight=float(weights.sum()))
    assert np.abs(decoded - mean).max() <= bound * (1 + 1e-9)
    assert sum(e.clipped for e in encoded) == int((np.abs(xs) > clip).sum())


def test_values_land_in_the_ring_dtype():
    fp = fixed_point(clip=1.0, bits=24, clients=3)
    out = fp.encode(np.array([-1.0, 0.0, 1.0]), weight=1.0, rng=np.random.default_rng(0))
    assert out.values.dtype == dtype_for(24)
    assert int(out.values.max()) < 2**24
    assert int(out.values[0]) > 2**23  # negative numbers live in the upper half


@pytest.mark.parametrize(
    ("vector", "weight", "match"),
    [
        (np.array([1.0, np.nan]), 1.0, "expected finite values, got 1 not"),
        (np.array([np.inf]), 1.0, "expected finite values"),
        (np.zeros((2, 2)), 1.0, "expected a 1-D vector"),
        (np.zeros(2), 0.0, "weight must be a finite number > 0"),
        (np.zeros(2), 3.0, "weight must be <= max_weight 2, got 3"),
    ],
)
def test_encode_refuses_bad_input(vector, weight, match):
    fp = fixed_point(clip=1.0, bits=32, clients=2, max_weight=2.0)
    with pytest.raises(ValueError, match=match):
        fp.encode(vector, weight=weight, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0}, "clip must be a finite number > 0"),
        ({"clients": 0}, "clients must be an integer >= 1"),
        ({"bits": 12}, "bits must be one of"),
        ({"max_weight": -1.0}, "max_weight must be a finite number > 0"),
    ],
)
def test_fixed_point_refuses_bad_hyperparameters(kwargs, match):
    args = {"clip": 1.0, "bits": 32, "clients": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        fixed_point(**args)
