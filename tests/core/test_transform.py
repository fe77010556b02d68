import numpy as np

from fedlake.core.transform import Transform, chain, identity, scale


def counting() -> Transform:
    def init(params):
        return 0

    def update(vec, state, *, params, rng):
        return vec + 1, state + 1

    return Transform(init, update)


def test_chain_composes_left_to_right_and_threads_state():
    tx = chain(scale(2.0), counting(), scale(10.0))
    p = np.zeros(2, np.float32)
    state = tx.init(p)
    rng = np.random.default_rng(0)
    v, state = tx.update(np.ones(2, np.float32), state, params=p, rng=rng)
    np.testing.assert_allclose(v, [30.0, 30.0])  # (1*2 + 1) * 10
    v, state = tx.update(np.ones(2, np.float32), state, params=p, rng=rng)
    assert state[1] == 2
    assert v.dtype == np.float32


def test_identity_and_empty_chain():
    p = np.zeros(1, np.float32)
    for tx in (identity(), chain()):
        v, s = tx.update(np.array([3.0], np.float32), tx.init(p), params=p, rng=None)
        assert v[0] == 3.0
