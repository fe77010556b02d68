"""Golden numbers, immutability, pickling and validation of the server optimisers."""

import copy
import math
import pickle

import numpy as np
import pytest

from fedlake.core.transform import Transform, chain, scale
from fedlake.transforms import (
    AdaptiveState,
    MomentumState,
    fedadagrad,
    fedadam,
    fedyogi,
    server_momentum,
    server_sgd,
)

DELTAS = ([1.0, -2.0], [0.5, 0.5], [0.0625, 0.0])  # exact in float32
P = np.zeros(2, np.float32)


def steps(tx: Transform, deltas=DELTAS):
    """Run ``tx`` over ``deltas``; the steps and the states after each."""
    state, out, states = tx.init(P), [], []
    rng = np.random.default_rng(0)
    for d in deltas:
        step, state = tx.update(np.array(d, np.float32), state, params=P, rng=rng)
        assert step.dtype == np.float32 and step.shape == (2,)
        out.append(step)
        states.append(state)
    return out, states


def assert_same_state(a, b):
    """Two (possibly nested) states hold the same arrays."""
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    else:
        assert a == b


def adaptive_step(lr, m, v, tau):
    """Algorithm 2's step from hand-computed moments."""
    return lr * np.array(m) / (np.sqrt(np.array(v)) + tau)


def test_momentum_golden_numbers():
    # lr 0.5, momentum 0.5: v = [1, -2] -> [1, -0.5] -> [0.5625, -0.25]; step = v / 2
    out, states = steps(server_momentum(0.5, 0.5))
    np.testing.assert_array_equal(out, [[0.5, -1.0], [0.5, -0.25], [0.28125, -0.125]])
    assert isinstance(states[2], MomentumState)
    np.testing.assert_array_equal(states[2].velocity, [0.5625, -0.25])


def test_momentum_default_golden_numbers():
    # lr 1, momentum 0.9: v = [1, -2] -> [1.4, -1.3] -> [1.3225, -1.17]
    out, _ = steps(server_momentum())
    np.testing.assert_allclose(out, [[1.0, -2.0], [1.4, -1.3], [1.3225, -1.17]], rtol=1e-7)


def test_nesterov_golden_numbers():
    # step = lr * (momentum * v + delta), v as above (lr 0.5, momentum 0.5)
    # 0.5 ([0.5, -1] + [1, -2]), 0.5 ([0.5, -0.25] + [0.5, 0.5]),
    # 0.5 ([0.28125, -0.125] + [0.0625, 0])
    out, _ = steps(server_momentum(0.5, 0.5, nesterov=True))
    np.testing.assert_array_equal(out, [[0.75, -1.5], [0.5, 0.125], [0.171875, -0.0625]])


@pytest.mark.parametrize("lr", [1.0, 0.5, 2.0, 0.1, 0.37])
def test_momentum_zero_is_server_sgd(lr):
    ours, _ = steps(server_momentum(lr, 0.0))
    sgd, _ = steps(server_sgd(lr))
    for a, b in zip(ours, sgd, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-7, atol=0)  # float64 vs float32 product
        if lr in (1.0, 0.5, 2.0):
            np.testing.assert_array_equal(a, b)


def test_fedadagrad_golden_numbers():
    # beta1 0: m = delta; v = 1e-6 + sum of delta**2
    out, states = steps(fedadagrad())
    tau = 1e-3
    np.testing.assert_allclose(
        out[0], adaptive_step(0.1, [1, -2], [1.000001, 4.000001], tau), rtol=1e-6
    )
    np.testing.assert_allclose(
        out[1], adaptive_step(0.1, [0.5, 0.5], [1.250001, 4.250001], tau), rtol=1e-6
    )
    np.testing.assert_allclose(
        out[2], adaptive_step(0.1, [0.0625, 0.0], [1.25390725, 4.250001], tau), rtol=1e-6
    )
    assert isinstance(states[2], AdaptiveState)
    np.testing.assert_array_equal(states[2].m, [0.0625, 0.0])
    np.testing.assert_allclose(states[2].v, [1.25390725, 4.250001], rtol=1e-14)
    assert out[0][0] == pytest.approx(0.0999001, rel=1e-6)  # 0.1 / (1.0000005 + 0.001)


def test_fedadagrad_with_momentum():
    # beta1 0.5: m = [0.5, -1] -> [0.5, -0.25]
    out, _ = steps(fedadagrad(1.0, beta1=0.5, tau=0.5), DELTAS[:2])
    np.testing.assert_allclose(out[0], adaptive_step(1.0, [0.5, -1], [1.25, 4.25], 0.5), rtol=1e-6)
    np.testing.assert_allclose(out[1], adaptive_step(1.0, [0.5, -0.25], [1.5, 4.5], 0.5), rtol=1e-6)


# m for beta1 0.9: [0.1, -0.2] -> [0.14, -0.13] -> [0.13225, -0.117]
M = ([0.1, -0.2], [0.14, -0.13], [0.13225, -0.117])


def test_fedadam_golden_numbers():
    # v = 0.99 v + 0.01 delta**2 from v = 1e-6:
    # [0.01000099, 0.04000099] -> [0.0124009801, 0.0421009801] -> [0.0123160328, 0.0416799703]
    v = (
        [0.01000099, 0.04000099],
        [0.0124009801, 0.0421009801],
        [0.012276970299 + 0.0000390625, 0.041679970299],
    )
    out, states = steps(fedadam())
    for k in range(3):
        np.testing.assert_allclose(out[k], adaptive_step(0.1, M[k], v[k], 1e-3), rtol=1e-6)
    np.testing.assert_allclose(states[2].m, M[2], rtol=1e-14)
    np.testing.assert_allclose(states[2].v, v[2], rtol=1e-14)
    assert out[0][0] == pytest.approx(0.0990051, rel=1e-6)  # 0.01 / (0.1000049 + 0.001)


def test_fedyogi_golden_numbers():
    # v - 0.01 delta**2 sign(v - delta**2) from v = 1e-6: v < delta**2 in steps 1 and 2 (v
    # grows by 0.01 delta**2), then v > delta**2 = 0.00390625 in step 3 (v shrinks)
    v = ([0.010001, 0.040001], [0.012501, 0.042501], [0.0124619375, 0.042501])
    out, states = steps(fedyogi())
    for k in range(3):
        np.testing.assert_allclose(out[k], adaptive_step(0.1, M[k], v[k], 1e-3), rtol=1e-6)
    np.testing.assert_allclose(states[2].m, M[2], rtol=1e-14)
    np.testing.assert_allclose(states[2].v, v[2], rtol=1e-14)


def test_adaptive_initial_state():
    state = fedadam(tau=0.01).init(np.ones(3, np.float32))
    np.testing.assert_array_equal(state.m, np.zeros(3))
    np.testing.assert_allclose(state.v, np.full(3, 1e-4), rtol=1e-15)
    assert state.m.dtype == state.v.dtype == np.float64


OPTIMISERS = {
    "momentum": lambda: server_momentum(0.5, 0.9),
    "nesterov": lambda: server_momentum(0.5, 0.9, nesterov=True),
    "fedadagrad": lambda: fedadagrad(0.1, beta1=0.5),
    "fedadam": fedadam,
    "fedyogi": fedyogi,
    "chained": lambda: chain(scale(2.0), fedyogi()),
}


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_state_is_not_mutated(name):
    tx = OPTIMISERS[name]()
    _, states = steps(tx, DELTAS[:2])
    old = states[1]
    kept = copy.deepcopy(old)
    vec = np.array([3.0, -1.0], np.float32)
    kept_vec = vec.copy()
    step, new = tx.update(vec, old, params=P, rng=np.random.default_rng(0))
    assert_same_state(old, kept)
    np.testing.assert_array_equal(vec, kept_vec)
    assert new is not old
    again, _ = tx.update(vec, old, params=P, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again, step)  # same state, same step: pure


@pytest.mark.parametrize("name", ["momentum", "fedadam", "fedyogi", "fedadagrad"])
def test_state_arrays_are_read_only(name):
    _, states = steps(OPTIMISERS[name]())
    for array in states[-1]:
        assert array.dtype == np.float64 and not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1.0


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_state_survives_a_pickle_round_trip(name):
    tx = OPTIMISERS[name]()
    _, states = steps(tx, DELTAS[:2])
    restored = pickle.loads(pickle.dumps(states[1]))
    assert type(restored) is type(states[1])
    vec = np.array(DELTAS[2], np.float32)
    a, sa = tx.update(vec, states[1], params=P, rng=np.random.default_rng(0))
    b, sb = tx.update(vec, restored, params=P, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert_same_state(sa, sb)


BAD_NUMBERS = [0, -1.0, math.nan, math.inf, -math.inf, True, "0.1", None]


@pytest.mark.parametrize("lr", BAD_NUMBERS)
@pytest.mark.parametrize("factory", [server_sgd, server_momentum, fedadagrad, fedadam, fedyogi])
def test_bad_lr_is_refused(factory, lr):
    with pytest.raises(ValueError, match=r"server lr must be a finite number > 0, got"):
        factory(lr)


BAD_FRACTIONS = [-0.1, 1.0, 1.2, math.nan, math.inf, True, "0.5", None]


@pytest.mark.parametrize("value", BAD_FRACTIONS)
def test_bad_momentum_is_refused(value):
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\), got"):
        server_momentum(1.0, value)


@pytest.mark.parametrize("value", BAD_FRACTIONS)
@pytest.mark.parametrize("factory", [fedadagrad, fedadam, fedyogi])
def test_bad_beta1_is_refused(factory, value):
    with pytest.raises(ValueError, match=r"beta1 must be a number in \[0, 1\), got"):
        factory(beta1=value)


@pytest.mark.parametrize("value", BAD_FRACTIONS)
@pytest.mark.parametrize("factory", [fedadam, fedyogi])
def test_bad_beta2_is_refused(factory, value):
    with pytest.raises(ValueError, match=r"beta2 must be a number in \[0, 1\), got"):
        factory(beta2=value)


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("factory", [fedadagrad, fedadam, fedyogi])
def test_bad_tau_is_refused(factory, value):
    with pytest.raises(ValueError, match=r"tau must be a finite number > 0, got"):
        factory(tau=value)


def test_bad_nesterov_is_refused():
    with pytest.raises(ValueError, match="nesterov must be a bool, got 1"):
        server_momentum(nesterov=1)  # type: ignore[arg-type]


def test_message_names_the_value():
    with pytest.raises(ValueError, match=r"beta1 must be a number in \[0, 1\), got 1.2"):
        fedadam(beta1=1.2)
    with pytest.raises(ValueError, match=r"server lr must be a finite number > 0, got -0.5"):
        fedyogi(-0.5)
