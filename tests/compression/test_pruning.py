import dataclasses

import numpy as np
import pytest

from fedlake.compression.pruning import MagnitudePruning, magnitude_mask, mask_gradients

# schedule


@pytest.mark.parametrize(
    ("round_", "sparsity"),
    [
        (0, 0.0),  # before start
        (1, 0.0),
        (2, 0.0),  # start: progress 0
        (3, 0.5 * (1 - 0.75**3)),  # 0.2890625
        (4, 0.5 * (1 - 0.5**3)),  # middle: 0.4375
        (5, 0.5 * (1 - 0.25**3)),  # 0.4921875
        (6, 0.5),  # end
        (100, 0.5),  # after the end: stays
    ],
)
def test_sparsity_follows_the_cubic_schedule(round_, sparsity):
    assert MagnitudePruning(0.5, start_round=2, end_round=6).sparsity_at(round_) == sparsity


def test_sparsity_hand_values():
    pruning = MagnitudePruning(0.5, start_round=2, end_round=6)
    assert pruning.sparsity_at(3) == 0.2890625
    assert pruning.sparsity_at(4) == 0.4375
    assert pruning.sparsity_at(5) == 0.4921875


def test_sparsity_without_end_round_jumps_at_start():
    pruning = MagnitudePruning(0.9, start_round=3)
    assert [pruning.sparsity_at(r) for r in range(6)] == [0.0, 0.0, 0.0, 0.9, 0.9, 0.9]


def test_sparsity_with_end_equal_to_start_jumps_at_start():
    pruning = MagnitudePruning(0.25, start_round=1, end_round=1)
    assert [pruning.sparsity_at(r) for r in range(3)] == [0.0, 0.25, 0.25]


def test_mask_is_none_before_pruning_starts():
    params = np.arange(16, dtype=np.float32)
    pruning = MagnitudePruning(0.5, start_round=2, end_round=6)
    assert pruning.mask(params, 0) is None
    assert pruning.mask(params, 1) is None
    assert pruning.mask(params, 2) is None  # sparsity 0 at the start of the ramp


def test_mask_follows_the_schedule():
    params = np.arange(1, 17, dtype=np.float32)  # |w| increasing
    pruning = MagnitudePruning(0.5, start_round=2, end_round=6)
    mask = pruning.mask(params, 4)  # sparsity 0.4375: prune floor(7.0) = 7 of 16
    np.testing.assert_array_equal(mask, np.arange(16) >= 7)
    np.testing.assert_array_equal(pruning.mask(params, 6), np.arange(16) >= 8)


def test_magnitude_pruning_is_frozen():
    pruning = MagnitudePruning(0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pruning.sparsity = 0.2  # type: ignore[misc]


@pytest.mark.parametrize("sparsity", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan")])
def test_invalid_sparsity_rejected(sparsity):
    with pytest.raises(ValueError, match=r"pruning sparsity must be in \(0, 1\), got"):
        MagnitudePruning(sparsity)


def test_negative_start_round_rejected():
    with pytest.raises(ValueError, match="start_round must be >= 0, got -1"):
        MagnitudePruning(0.5, start_round=-1)


def test_end_round_before_start_round_rejected():
    with pytest.raises(ValueError, match=r"end_round \(1\) must be >= start_round \(3\)"):
        MagnitudePruning(0.5, start_round=3, end_round=1)


# magnitude_mask


def test_magnitude_mask_keeps_the_largest_magnitudes():
    params = np.array([0.5, -3.0, 1.0, 3.0, -1.0, 0.0, 2.0, -2.5], np.float32)
    mask = magnitude_mask(params, 0.5)  # prune floor(4.0) = 4, keep 4
    np.testing.assert_array_equal(mask, [False, True, False, True, False, False, True, True])
    assert mask.dtype == bool


def test_magnitude_mask_ties_go_to_the_lower_index():
    params = np.array([1.0, -1.0, 1.0, -1.0, 1.0], np.float32)
    np.testing.assert_array_equal(magnitude_mask(params, 0.4), [True, True, True, False, False])
    params = np.array([0.1, 2.0, -2.0, 5.0, 2.0], np.float32)
    # prune floor(0.5 * 5) = 2: keep 5, then the first two of the tied 2s
    np.testing.assert_array_equal(magnitude_mask(params, 0.5), [False, True, True, True, False])


@pytest.mark.parametrize(
    ("dim", "sparsity", "kept"),
    [(10, 0.5, 5), (10, 0.25, 8), (7, 0.5, 4), (3, 0.1, 3), (1, 0.9, 1), (0, 0.5, 0)],
)
def test_magnitude_mask_keeps_d_minus_floor_sparsity_times_d(dim, sparsity, kept):
    params = np.random.default_rng(dim).standard_normal(dim).astype(np.float32)
    mask = magnitude_mask(params, sparsity)
    assert mask.shape == (dim,)
    assert mask.sum() == kept
    if 0 < kept < dim:
        assert np.abs(params[mask]).min() >= np.abs(params[~mask]).max()


def test_magnitude_mask_count_is_not_shrunk_by_float_rounding():
    params = np.arange(1, 101, dtype=np.float32)
    assert magnitude_mask(params, 0.57).sum() == 43


# mask_gradients


def test_mask_gradients_zeroes_pruned_gradients():
    mask = np.array([True, False, True, False])
    tx = mask_gradients(mask)
    params = np.ones(4, np.float32)
    state = tx.init(params)
    assert state is None
    grad = np.array([1.5, -2.0, 3.0, 4.0], np.float32)
    out, state = tx.update(grad, state, params=params, rng=np.random.default_rng(0))
    assert state is None
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.5, 0.0, 3.0, 0.0])
    np.testing.assert_array_equal(grad, [1.5, -2.0, 3.0, 4.0])  # input untouched


def test_mask_gradients_rejects_a_mask_of_the_wrong_size():
    tx = mask_gradients(np.ones(10, bool))
    with pytest.raises(ValueError, match="pruning mask has 10 entries, the model 9"):
        tx.init(np.zeros(9, np.float32))


def test_at_least_one_weight_survives_any_sparsity():
    assert magnitude_mask(np.ones(100, np.float32), 0.99999999999).sum() == 1
    assert magnitude_mask(np.array([0.5, -2.0], np.float32), 0.9).tolist() == [False, True]
