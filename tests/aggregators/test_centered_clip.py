"""Centered clipping: exact numbers for one and several steps, tau fixed or the median."""

import numpy as np
import pytest
from aggregators.cohorts import updates

from fedlake.aggregators import centered_clip

# One coordinate, clients at 0, 1 and 10, history v0 = 0, tau = 1:
#   step 1: offsets 0, 1, 10 -> clipped 0, 1, 1 -> mean 2/3            v1 = 2/3
#   step 2: offsets -2/3, 1/3, 28/3 -> -2/3, 1/3, 1 -> sum 2/3, mean 2/9  v2 = 8/9
#   step 3: offsets -8/9, 1/9, 82/9 -> -8/9, 1/9, 1 -> sum 2/9, mean 2/27 v3 = 26/27
# (v_k = 1 - 3^-k: the far client pulls by tau / n = 1/3 per step at most)
LINE = [0, 1, 10]


def aggregate(agg, rows, state=None):
    ups = updates(rows)
    return agg.aggregate(ups, agg.init(ups[0].delta.shape[0]) if state is None else state)


@pytest.mark.parametrize(("iterations", "expected"), [(1, 2 / 3), (2, 8 / 9), (3, 26 / 27)])
def test_fixed_tau_one_and_several_steps(iterations, expected):
    v, _ = aggregate(centered_clip(tau=1.0, iterations=iterations), LINE)
    np.testing.assert_allclose(v, [expected], rtol=1e-6)


def test_tau_none_uses_the_median_distance_in_every_step():
    # step 1 from 0: distances 0, 1, 10, median 1: as tau = 1 above, v1 = 2/3
    # step 2 from 2/3: distances 2/3, 1/3, 28/3, median 2/3; offsets -2/3 (not clipped:
    #   exactly the radius), 1/3, 28/3 -> 2/3; sum 1/3, mean 1/9, v2 = 2/3 + 1/9 = 7/9
    v1, _ = aggregate(centered_clip(iterations=1), LINE)
    v2, _ = aggregate(centered_clip(iterations=2), LINE)
    np.testing.assert_allclose(v1, [2 / 3], rtol=1e-6)
    np.testing.assert_allclose(v2, [7 / 9], rtol=1e-6)


def test_clipping_is_on_the_whole_offset_vector():
    # v0 = 0; (3,4) has norm 5 -> clipped to 2 * (3,4)/5 = (1.2, 1.6); (1,0) norm 1 stays;
    # (0,-2) norm exactly 2 stays. Mean: (2.2, -0.4) / 3.
    rows = [[3, 4], [1, 0], [0, -2]]
    expected = [2.2 / 3, -0.4 / 3]
    v, _ = aggregate(centered_clip(tau=2.0), rows)
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    # tau = None: distances 5, 1, 2, median 2: the same result
    v, _ = aggregate(centered_clip(), rows)
    np.testing.assert_allclose(v, expected, rtol=1e-6)


def test_state_is_the_previous_aggregate_and_carries_between_calls():
    agg = centered_clip(tau=1.0, iterations=1)
    assert agg.init(1).tolist() == [0.0]
    v1, state = aggregate(agg, LINE)
    np.testing.assert_array_equal(state, v1)
    assert not state.flags.writeable  # the history cannot be mutated by the caller
    # the second call starts from v1 = 2/3: one step there gives 8/9, like two steps above
    v2, state2 = aggregate(agg, LINE, state=state)
    np.testing.assert_allclose(v2, [8 / 9], rtol=1e-6)
    np.testing.assert_array_equal(state2, v2)


def test_state_none_starts_from_zero():
    v, _ = centered_clip(tau=1.0).aggregate(updates(LINE), None)
    np.testing.assert_allclose(v, [2 / 3], rtol=1e-6)


def test_history_far_from_the_cohort_moves_by_at_most_tau_per_step():
    # v0 = 100 and every client at 0: each offset is -100, clipped to -1: v1 = 99, v2 = 98
    state = np.array([100.0], np.float32)
    v, _ = aggregate(centered_clip(tau=1.0, iterations=2), [0, 0, 0], state=state)
    np.testing.assert_array_equal(v, [98.0])


def test_client_weights_are_not_used():
    agg = centered_clip(tau=1.0)
    a, _ = agg.aggregate(updates(LINE, [1, 1, 1]), None)
    b, _ = agg.aggregate(updates(LINE, [1, 1, 50]), None)
    np.testing.assert_array_equal(a, b)
