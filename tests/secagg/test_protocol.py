"""Whole rounds in memory: exact sums under dropouts, clean aborts, masked data only."""

import random

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from secagg.rounds import make_config, plain_sum, random_inputs

from fedlake.secagg import RoundAborted, fixed_point, run_round
from fedlake.secagg.messages import MaskedInput, decode
from fedlake.secagg.ring import pack, unpack


@st.composite
def rounds(draw, *, within_tolerance=True):
    """(n, k, t, bits, dropouts): dropouts[i] drop before stage i, at most k - t in all."""
    n = draw(st.integers(3, 40))
    k = draw(st.sampled_from([k for k in range(2, n) if k % 2 == 0 or n % 2 == 0]))
    t = draw(st.integers(k // 2 + 1, k))
    budget = k - t if within_tolerance else n // 2
    dropped = draw(st.lists(st.integers(1, n), unique=True, max_size=budget))
    stages = [draw(st.integers(0, 3)) for _ in dropped]
    dropouts = [{u for u, s in zip(dropped, stages, strict=True) if s == i} for i in range(4)]
    bits = draw(st.sampled_from([16, 24, 32, 64]))
    return n, k, t, bits, dropouts


@settings(max_examples=25, deadline=None)
@given(params=rounds(), seed=st.integers(0, 2**16))
def test_sum_is_exact_and_decodes_within_the_bound(params, seed):
    n, k, t, bits, dropouts = params
    config = make_config(n, k, t, bits=bits, length=16)
    encoding = fixed_point(clip=1.0, bits=bits, clients=n, max_weight=10.0)
    rng = np.random.default_rng(seed)
    xs = {u: rng.normal(0, 0.7, config.length) for u in config.clients}
    weights = {u: float(rng.integers(1, 11)) for u in config.clients}
    encoded = {u: encoding.encode(xs[u], weight=weights[u], rng=rng).values for u in xs}

    aggregate = run_round(config, encoded, dropouts=dropouts, random=random.Random(seed))

    expected = [u for u in config.clients if not any(u in d for d in dropouts[:3])]
    assert aggregate.survivors == tuple(expected)
    np.testing.assert_array_equal(aggregate.total, plain_sum(encoded, expected, bits))
    total_weight = sum(weights[u] for u in expected)
    mean = sum(weights[u] * np.clip(xs[u], -1, 1) for u in expected) / total_weight
    decoded = encoding.decode(aggregate.total, total_weight=total_weight)
    bound = encoding.error_bound(clients=len(expected), total_weight=total_weight)
    assert np.abs(decoded - mean).max() <= bound * (1 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(params=rounds(within_tolerance=False), seed=st.integers(0, 2**16))
def test_beyond_the_tolerance_a_round_is_exact_or_aborts_with_a_reason(params, seed):
    n, k, t, bits, dropouts = params
    config = make_config(n, k, t, bits=bits, length=4)
    inputs = random_inputs(config, seed)
    try:
        aggregate = run_round(config, inputs, dropouts=dropouts, random=random.Random(seed))
    except RoundAborted as exc:
        event("aborted")
        assert "t=" in exc.reason or "splits" in exc.reason
        return
    event("finished")
    np.testing.assert_array_equal(aggregate.total, plain_sum(inputs, aggregate.survivors, bits))
    assert len(aggregate.survivors) >= t


def test_secagg_plus_round_with_the_chosen_parameters():
    config = make_config(60, 12, 7, length=1000)
    inputs = random_inputs(config, 3)
    dropouts = [{1}, {2}, {3, 4}, {5}]
    aggregate = run_round(config, inputs, dropouts=dropouts)
    survivors = [u for u in config.clients if u not in {1, 2, 3, 4}]
    assert aggregate.survivors == tuple(survivors) and aggregate.dropped == (3, 4)
    assert aggregate.stage_sizes == (59, 58, 56, 55)
    np.testing.assert_array_equal(aggregate.total, plain_sum(inputs, survivors, 32))


def test_a_single_masked_vector_looks_uniform():
    # All-zero input: whatever the server sees is mask alone; it must look uniform.
    config = make_config(5, 4, 3, bits=32, length=1 << 15)
    zeros = {u: np.zeros(config.length, dtype=np.uint32) for u in config.clients}
    view = []
    run_round(config, zeros, random=random.Random(7), view=view)
    masked = [decode(raw) for raw in view if raw[0] == MaskedInput.TAG]
    values = unpack(masked[0].vector, config.length, 32).astype(np.float64) / 2**32
    counts = np.bincount((values * 256).astype(int), minlength=256)
    expected = values.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 8 * np.sqrt(2 * 255)  # df 255; ~8 sd above the mean
    ordered = np.sort(values)
    ks = max(
        np.max(np.arange(1, values.size + 1) / values.size - ordered),
        np.max(ordered - np.arange(values.size) / values.size),
    )
    assert ks < 1.95 / np.sqrt(values.size)  # the KS test at p = 0.001


def test_the_servers_view_never_contains_a_plaintext_input():
    config = make_config(8, 4, 3, bits=32, length=64)
    encoding = fixed_point(clip=1.0, bits=32, clients=8)
    rng = np.random.default_rng(0)
    floats = {u: rng.normal(0, 0.3, config.length) for u in config.clients}
    encoded = {u: encoding.encode(floats[u], weight=1.0, rng=rng).values for u in floats}
    view = []
    run_round(config, encoded, dropouts=[(), (), {8}, ()], view=view)
    seen = b"".join(view)
    assert len(view) == 8 + 8 + 8 + 8 + 7 + 7 + 7  # every message in or out, one by one
    for u in config.clients:
        for raw in (
            pack(encoded[u], 32),
            floats[u].tobytes(),
            floats[u].astype(np.float32).tobytes(),
        ):
            for start in range(0, len(raw) - 16, 16):
                assert raw[start : start + 16] not in seen


def test_dropping_everyone_aborts_cleanly():
    config = make_config(5, 4, 3)
    with pytest.raises(RoundAborted, match="none has t=3"):
        run_round(config, random_inputs(config), dropouts=[set(config.clients)])


def test_run_round_refuses_bad_arguments():
    config = make_config(5, 4, 3)
    with pytest.raises(ValueError, match="expected inputs for clients"):
        run_round(config, {1: np.zeros(8, dtype=np.uint32)})
    with pytest.raises(ValueError, match="at most 4 dropout sets"):
        run_round(config, random_inputs(config), dropouts=[()] * 5)
