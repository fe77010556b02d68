"""Coordinate-wise median and trimmed mean: exact numbers on toy cohorts."""

import numpy as np
import pytest
from aggregators.cohorts import run

from fedlake.aggregators import median, trimmed_mean
from fedlake.aggregators.median import median_of_rows
from fedlake.aggregators.trimmed_mean import trimmed_count


def test_median_odd_n():
    # x: 1 3 2 -> 2 ; y: 5 -1 0 -> 0 (each coordinate on its own: no client is "the" median)
    np.testing.assert_array_equal(run(median(), [[1, 5], [3, -1], [2, 0]]), [2.0, 0.0])


def test_median_even_n_averages_the_two_middle_values():
    # x: 1 3 2 10 -> sorted 1 2 3 10 -> (2+3)/2 = 2.5 ; y: 5 -1 0 2 -> -1 0 2 5 -> 1
    np.testing.assert_array_equal(run(median(), [[1, 5], [3, -1], [2, 0], [10, 2]]), [2.5, 1.0])


def test_median_ignores_weights():
    rows = [[1, 5], [3, -1], [2, 0], [10, 2]]
    np.testing.assert_array_equal(run(median(), rows, [1, 100, 1, 1]), [2.5, 1.0])


def test_median_of_rows_even_is_exact_near_the_float32_limit():
    # (3e38 + 3e38) / 2 overflows in float32; the mean of the middle pair is taken in float64
    block = np.array([[3e38, 3e38, -3e38, 3e38]], np.float32)
    assert median_of_rows(block)[0] == np.float32(3e38)


# Ten clients, one coordinate: 0 1 2 4 8 16 32 64 128 256 (given out of order below).
#   k = 0: mean of all = 511 / 10 = 51.1
#   k = 1: drop 0 and 256 -> 1+2+4+8+16+32+64+128 = 255, / 8 = 31.875
#   k = 2: drop 0 1 and 128 256 -> 2+4+8+16+32+64 = 126, / 6 = 21
#   k = 3: drop 0 1 2 and 64 128 256 -> 4+8+16+32 = 60, / 4 = 15
# The second coordinate holds minus the same values in another client order: the trimmed
# mean of each coordinate is computed on its own.
POWERS = [16, 0, 256, 2, 64, 1, 128, 8, 4, 32]
ROWS = [[v, -w] for v, w in zip(POWERS, reversed(POWERS), strict=True)]


@pytest.mark.parametrize(
    ("ratio", "k", "expected"),
    [
        (0.0, 0, 51.1),
        (0.1, 1, 31.875),  # 0.1 * 10 = 1
        (0.19, 1, 31.875),  # floor(1.9) = 1
        (0.2, 2, 21.0),
        (0.28, 2, 21.0),  # floor(2.8) = 2, not round(2.8) = 3
        (0.3, 3, 15.0),
        (0.49, 4, 12.0),  # floor(4.9) = 4: drop four at each end -> (8 + 16) / 2 = 12
    ],
)
def test_trimmed_mean_drops_floor_ratio_times_n_at_each_end(ratio, k, expected):
    assert trimmed_count(10, ratio) == k
    out = run(trimmed_mean(trim_ratio=ratio), ROWS)
    np.testing.assert_allclose(out, [expected, -expected], rtol=1e-7)


def test_trimmed_count_of_a_share_written_as_a_over_n_is_a():
    # 1/49 is stored a hair below 1/49: a bare floor(1/49 * 49) would be 0
    assert trimmed_count(49, 1 / 49) == 1
    assert trimmed_count(100, 0.29) == 29
    for n in range(1, 120):
        for a in range((n + 1) // 2):
            assert trimmed_count(n, a / n) == a
    # never so many that nothing is left
    assert trimmed_count(2, 0.49999999999999994) == 0


def test_trimmed_mean_trims_one_attacker_among_49():
    # 48 clients at 1 and one at 1e6: ratio 1/49 drops the 1e6 (and one 1): mean 1
    rows = [1.0] * 24 + [1e6] + [1.0] * 24
    np.testing.assert_array_equal(run(trimmed_mean(trim_ratio=1 / 49), rows), [1.0])


def test_trimmed_mean_with_ratio_0_is_the_uniform_mean():
    # weights are not used: (1 + 2 + 6) / 3 = 3, whatever the weights
    np.testing.assert_array_equal(run(trimmed_mean(trim_ratio=0.0), [1, 2, 6], [5, 1, 1]), [3.0])


def test_trimmed_mean_default_ratio_is_one_tenth():
    # 0.1 * 10 = 1 value dropped at each end, as in the table above
    np.testing.assert_array_equal(run(trimmed_mean(), ROWS), [31.875, -31.875])


def test_trimmed_mean_small_cohort_keeps_everything_below_one_trimmed_value():
    # n = 4, ratio 0.2: floor(0.8) = 0, nothing dropped: (1 + 2 + 3 + 100) / 4 = 26.5
    np.testing.assert_array_equal(run(trimmed_mean(trim_ratio=0.2), [1, 2, 3, 100]), [26.5])
    # n = 5: floor(1.0) = 1: drop 1 and 100 -> (2 + 3 + 4) / 3 = 3
    np.testing.assert_array_equal(run(trimmed_mean(trim_ratio=0.2), [1, 2, 3, 4, 100]), [3.0])


def test_trimmed_mean_with_a_fixed_count_trims_it_whatever_n():
    # trim = 2: from 0 1 2 3 4 100 -1000 drop -1000, 0 and 100, 4 -> mean(1, 2, 3) = 2
    rows = [[0.0], [1.0], [2.0], [3.0], [4.0], [100.0], [-1000.0]]
    np.testing.assert_array_equal(run(trimmed_mean(trim=2), rows), [2.0])
    # after a dropout (6 arrive) it still drops 2 at each end: 2 3 kept -> 2.5
    np.testing.assert_array_equal(run(trimmed_mean(trim=2), rows[1:]), [2.5])
    assert trimmed_mean(trim=2).min_updates == 5


def test_trimmed_mean_count_needs_2_trim_plus_1_updates():
    with pytest.raises(ValueError, match=r"trimmed_mean needs at least 5 updates \(n >= 2 trim"):
        run(trimmed_mean(trim=2), [[0.0], [1.0], [2.0], [3.0]])
    with pytest.raises(ValueError, match="give trim_ratio or trim, not both"):
        trimmed_mean(trim=1, trim_ratio=0.1)
    with pytest.raises(ValueError, match=r"trim \(values dropped at each end\) must be an integer"):
        trimmed_mean(trim=-1)
