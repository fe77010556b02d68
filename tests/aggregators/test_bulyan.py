"""Bulyan: exact numbers on a toy cohort, worked out by hand below."""

import numpy as np
import pytest
from aggregators.cohorts import run

from fedlake.aggregators import bulyan
from fedlake.aggregators.bulyan import bulyan_select, mean_around_median

# n = 7, f = 1 (n >= 4f + 3): theta = n - 2f = 5 updates are selected, then every
# coordinate averages the beta = theta - 2f = 3 selected values nearest its median.
#
#   index:   0      1      2      3      4      5       6
#   point: (1,0)  (1,2)  (3,1)  (0,0)  (4,0)  (3,0)  (23,-24)
#
# squared distances
#          0    1    2    3    4    5     6
#   0      -    4    5    1    9    4  1060
#   1      4    -    5    5   13    8  1160
#   2      5    5    -   10    2    1  1025
#   3      1    5   10    -   16    9  1105
#   4      9   13    2   16    -    1   937
#   5      4    8    1    9    1    -   976
#   6   1060 1160 1025 1105  937  976     -
#
# Repeated Krum, over max(1, n_left - f - 2) neighbours among those left:
#   7 left, k=4: 0: 1+4+4+5=14  1: 4+5+5+8=22  2: 1+2+5+5=13  3: 1+5+9+10=25
#                4: 1+2+9+13=25  5: 1+1+4+8=14  6: huge          -> 2
#   6 left, k=3: 0: 1+4+4=9  1: 4+5+8=17  3: 1+5+9=15  4: 1+9+13=23  5: 1+4+8=13  -> 0
#   5 left, k=2: 1: 5+8=13  3: 5+9=14  4: 1+13=14  5: 1+8=9           -> 5
#   4 left, k=1: 1: 5  3: 5  4: 13  6: huge. 1 and 3 tie (with one neighbour, the
#                closest pair always does): the first in cohort order   -> 1
#   3 left, k=1: 3: 16  4: 16  6: huge. Tie again                     -> 3
# selected: 2, 0, 5, 1, 3 = (3,1), (1,0), (3,0), (1,2), (0,0); the outlier is out.
#   x: 3, 1, 3, 1, 0 -> sorted 0 1 1 3 3, median 1, nearest three 1, 1, 0 -> 2/3
#   y: 1, 0, 0, 2, 0 -> sorted 0 0 0 1 2, median 0, nearest three 0, 0, 0 -> 0
# (the mean of the selected would be (8/5, 3/5), their median (1, 0))
# (Small integers: every distance is computed exactly, and the ties above are real.)
SEVEN = [[1, 0], [1, 2], [3, 1], [0, 0], [4, 0], [3, 0], [23, -24]]


def test_bulyan_selection_by_repeated_krum():
    x = np.asarray(SEVEN, dtype=np.float64)
    sq = ((x[:, None] - x[None]) ** 2).sum(axis=2)
    assert bulyan_select(sq, f=1) == [2, 0, 5, 1, 3]


def test_bulyan_exact_numbers():
    np.testing.assert_allclose(run(bulyan(f=1), SEVEN), [2 / 3, 0.0], rtol=1e-7)


def test_bulyan_with_f_0_is_the_mean():
    # f = 0: every update is selected and beta = n, so every value is averaged
    np.testing.assert_allclose(run(bulyan(f=0), [[0, 1], [1, 5], [5, 0]]), [2.0, 2.0])


def test_mean_around_median_odd_and_even_rows():
    # odd: 10 0 1 4 3 -> sorted 0 1 3 4 10, median 3; nearest three 3, 4, 1 -> 8/3
    # even: 0 2 3 7 -> median 2.5; nearest two 2, 3 -> 2.5; nearest three adds 0 -> 5/3
    np.testing.assert_allclose(
        mean_around_median(np.array([[10, 0, 1, 4, 3]], np.float32), 3), [8 / 3]
    )
    np.testing.assert_allclose(mean_around_median(np.array([[7, 0, 3, 2]], np.float32), 2), [2.5])
    np.testing.assert_allclose(mean_around_median(np.array([[7, 0, 3, 2]], np.float32), 3), [5 / 3])


def test_mean_around_median_is_not_cancelled_by_a_huge_value():
    # -1e30 1 2 3 4: median 2, nearest three 1, 2, 3 -> 2. A prefix sum over the whole
    # row would give (-1e30 + 1 + 2 + 3) - (-1e30) = 0 in float64.
    row = np.array([[-1e30, 1, 2, 3, 4]], np.float32)
    np.testing.assert_array_equal(mean_around_median(row, 3), [2.0])


def test_bulyan_min_updates_and_message():
    assert bulyan(f=1).min_updates == 7 and bulyan(f=2).min_updates == 11
    with pytest.raises(ValueError, match=r"bulyan needs at least 7 updates \(n >= 4f \+ 3"):
        run(bulyan(f=1), SEVEN[:6])


def test_mean_around_median_slides_past_a_duplicated_boundary_value():
    # Sorted: -2.4537 -1.8029 -1.8029 -1.1941 -0.5688 -0.5413 -0.3712 -0.1342, beta 6.
    # Median (-1.1941 - 0.5688) / 2 = -0.88145; distances 1.572 0.921 0.921 0.313 0.313
    # 0.340 0.510 0.747: the six nearest take one -1.8029 and keep -0.1342, so the mean
    # is (-1.1941 - 0.5688 - 0.5413 - 0.3712 - 0.1342 - 1.8029) / 6 = -0.76875 (Flower's
    # answer too). An argmin over the runs' farther ends stopped at the first -1.8029.
    values = np.array(
        [[-2.4537, -1.8029, -1.8029, -1.1941, -0.5688, -0.5413, -0.3712, -0.1342]], np.float32
    )
    out = mean_around_median(values[:, ::-1].copy(), 6)
    np.testing.assert_allclose(out, [-0.76875], atol=1e-5)
