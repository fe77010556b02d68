"""Shamir sharing over GF(2^521 - 1): any t shares rebuild, fewer are refused, bad input named."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.secagg.errors import MalformedMessage
from fedlake.secagg.field import CHUNK_BYTES, PRIME, lagrange_at_zero
from fedlake.secagg.shamir import Share, combine, split


def test_lagrange_rebuilds_a_known_polynomial():
    f = lambda x: (5 + 7 * x + 11 * x * x) % PRIME  # noqa: E731
    xs = [3, 9, 40]
    coefficients = lagrange_at_zero(xs)
    assert sum(c * f(x) for c, x in zip(coefficients, xs, strict=True)) % PRIME == 5


@settings(max_examples=25, deadline=None)
@given(
    secret=st.binary(min_size=0, max_size=3 * CHUNK_BYTES + 1),
    holders=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_any_threshold_subset_rebuilds_the_secret(secret, holders, data):
    t = data.draw(st.integers(1, len(holders)))
    shares = split(secret, threshold=t, holders=holders, rng=random.Random(0))
    assert set(shares) == set(holders)
    subset = data.draw(st.lists(st.sampled_from(holders), min_size=t, unique=True))
    assert combine([shares[x] for x in subset]) == secret


def test_every_t_subset_agrees_and_mapping_input_works():
    secret = bytes(range(32))
    shares = split(secret, threshold=3, holders=[2, 5, 7, 11, 13])
    for subset in itertools.combinations(shares.values(), 3):
        assert combine(subset) == secret
    assert combine(shares) == secret


def test_fewer_than_t_shares_carry_no_information():
    # With t - 1 shares fixed, every candidate secret is consistent with them: the t-th
    # share that completes it exists. So t - 1 shares do not narrow the secret down.
    shares = split(b"\x01" * 32, threshold=3, holders=[1, 2, 3], rng=random.Random(1))
    known = [shares[1], shares[2]]
    for candidate in (b"\x00" * 32, b"\xff" * 32, b"\x01" * 32):
        # Solve for the third point of the quadratic through (0, candidate), 1, 2.
        y0 = int.from_bytes(candidate, "big")
        y1, y2 = known[0].values[0], known[1].values[0]
        # f(3) by Lagrange through x = 0, 1, 2: f(3) = y0 - 3 y1 + 3 y2
        y3 = (y0 - 3 * y1 + 3 * y2) % PRIME
        forged = Share(x=3, threshold=3, length=32, values=(y3,))
        assert combine([*known, forged]) == candidate


def test_default_coefficients_are_fresh():
    one = split(b"secret", threshold=2, holders=[1, 2])
    two = split(b"secret", threshold=2, holders=[1, 2])
    assert one[1] != two[1]  # os randomness: equal only with probability 2^-521


def test_share_bytes_round_trip_and_reject_garbage():
    share = split(b"x" * 70, threshold=2, holders=[4, 9])[9]
    assert Share.from_bytes(share.to_bytes()) == share
    raw = share.to_bytes()
    with pytest.raises(MalformedMessage, match="expected"):
        Share.from_bytes(raw[:-1])
    with pytest.raises(MalformedMessage, match="expected a share of"):
        Share.from_bytes(raw[:3])
    too_big = Share(x=9, threshold=2, length=70, values=(PRIME, 0))
    with pytest.raises(MalformedMessage, match="2\\^521"):
        Share.from_bytes(too_big.to_bytes())
    zero_x = Share(x=0, threshold=2, length=70, values=(1, 2))
    with pytest.raises(MalformedMessage, match="x must be"):
        Share.from_bytes(zero_x.to_bytes())


@pytest.mark.parametrize(
    ("threshold", "holders", "match"),
    [
        (0, [1, 2], "threshold must be in \\[1, 2\\]"),
        (3, [1, 2], "threshold must be in \\[1, 2\\]"),
        (1, [0, 2], "holders must be integers in \\[1, 2\\^32\\)"),
        (1, [2**32, 2], "holders must be integers"),
        (2, [1, 1, 2], "holders must be distinct"),
        (True, [1, 2], "threshold must be an integer"),
    ],
)
def test_split_refuses_bad_parameters(threshold, holders, match):
    with pytest.raises(ValueError, match=match):
        split(b"s", threshold=threshold, holders=holders)


def test_combine_refuses_too_few_duplicate_and_inconsistent_shares():
    shares = split(b"k" * 32, threshold=3, holders=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="expected >= 3 shares \\(the threshold\\), got 2"):
        combine([shares[1], shares[2]])
    with pytest.raises(ValueError, match="distinct share x"):
        combine([shares[1], shares[1], shares[2]])
    with pytest.raises(ValueError, match="at least one share"):
        combine([])
    other = split(b"k" * 33, threshold=3, holders=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="inconsistent shares"):
        combine([shares[1], shares[2], other[3]])
    lower = split(b"k" * 32, threshold=2, holders=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="inconsistent shares"):
        combine([shares[1], shares[2], lower[3]])
    wrong_count = Share(x=5, threshold=3, length=32, values=(1, 2))
    with pytest.raises(ValueError, match="expected 1 values for a 32-byte secret, got 2"):
        combine([shares[1], shares[2], wrong_count])


def test_tampered_share_gives_a_wrong_or_refused_secret():
    shares = split(b"\x00" * 32, threshold=2, holders=[1, 2])
    bad = Share(x=2, threshold=2, length=32, values=((shares[2].values[0] + 1) % PRIME,))
    with pytest.raises(ValueError, match="inconsistent shares"):
        combine([shares[1], bad])  # the result no longer fits 32 bytes
