"""Geometric median (smoothed Weiszfeld): closed-form medians and convergence to them."""

import math

import numpy as np
from aggregators.cohorts import run

from fedlake.aggregators import geometric_median
from fedlake.aggregators.geometric_median import weiszfeld

# Isosceles triangle A=(-1,0), B=(1,0), C=(0,3). Every angle is below 120 degrees, so the
# geometric median is the Fermat point, on the axis x = 0 where the three unit vectors
# towards the points cancel: at (0, y) those towards A and B sum to (0, -2y / sqrt(1+y^2))
# and the one towards C is (0, 1), so 2y = sqrt(1 + y^2), y = 1/sqrt(3).
# The objective there: 2 * sqrt(1 + 1/3) + (3 - 1/sqrt(3)) = 4/sqrt(3) - 1/sqrt(3) + 3
# = 3 + sqrt(3).
TRIANGLE = np.array([[-1, 0], [1, 0], [0, 3]], np.float32)
FERMAT = np.array([0.0, 1 / math.sqrt(3)])
FERMAT_OBJECTIVE = 3 + math.sqrt(3)


def objective(points: np.ndarray, z: np.ndarray) -> float:
    return float(np.linalg.norm(points.astype(np.float64) - z.astype(np.float64), axis=1).sum())


def test_one_weiszfeld_step_from_the_clipped_median_start():
    # start: coordinate-wise median of x (-1, 1, 0) and y (0, 0, 3) is (0, 0); distances
    # 1, 1, 3, median 1, so C's offset (0, 3) is clipped to (0, 1) and the start is the
    # mean of (-1,0), (1,0), (0,1): z0 = (0, 1/3).
    # step: distances from z0 are sqrt(10)/3 (A, B) and 8/3 (C); weights 3/sqrt(10),
    # 3/sqrt(10), 3/8; z1 = (0, 3 * 3/8) / (6/sqrt(10) + 3/8) = (0, 3 sqrt(10) / (16 + sqrt(10)))
    z, iterations = weiszfeld(TRIANGLE, nu=1e-6, max_iter=1, ftol=1e-6)
    assert iterations == 1
    np.testing.assert_allclose(z, [0.0, 3 * math.sqrt(10) / (16 + math.sqrt(10))], rtol=1e-6)


def test_converges_to_the_fermat_point():
    z, iterations = weiszfeld(TRIANGLE, nu=1e-6, max_iter=1000, ftol=1e-15)
    assert 1 < iterations < 1000
    np.testing.assert_allclose(z, FERMAT, atol=1e-6)
    # float32 z: the objective is optimal up to float32 rounding of z
    assert abs(objective(TRIANGLE, z) - FERMAT_OBJECTIVE) < 1e-6


def test_objective_decreases_towards_the_optimum_with_more_iterations():
    values = [
        objective(TRIANGLE, weiszfeld(TRIANGLE, nu=1e-6, max_iter=t, ftol=1e-15)[0])
        for t in (1, 2, 4, 8)
    ]
    assert values == sorted(values, reverse=True)
    assert all(v >= FERMAT_OBJECTIVE - 1e-6 for v in values)
    assert values[0] - FERMAT_OBJECTIVE > 1e-3 > values[-1] - FERMAT_OBJECTIVE


def test_default_tolerance_is_close_to_the_fermat_point():
    # ftol = 1e-6 stops when a step lowers the objective by about 1e-6 of n times the
    # median distance; the decrease is quadratic in the step, so z is then about
    # sqrt(1e-6) = 1e-3 (relative to the spread) from the optimum
    np.testing.assert_allclose(run(geometric_median(), TRIANGLE), FERMAT, atol=1e-2)


def test_collinear_points_give_the_middle_point():
    # On a line the geometric median is the 1-D median: 0 1 2 10 11 -> 2, i.e. 2 * (0.6, 0.8)
    t = np.array([0, 1, 2, 10, 11], np.float32)
    line = t[:, None] * np.array([0.6, 0.8], np.float32)
    np.testing.assert_allclose(run(geometric_median(ftol=1e-12), line), [1.2, 1.6], atol=1e-6)


def test_symmetric_points_give_their_centre_exactly():
    # The four corners (5 +- 1, 5 +- 1): by symmetry the median is (5, 5); the start is
    # already there (every offset has the median length, nothing is clipped).
    square = [[4, 4], [4, 6], [6, 4], [6, 6]]
    np.testing.assert_array_equal(run(geometric_median(), square), [5.0, 5.0])


def test_a_huge_update_does_not_stop_the_iterations_early():
    # 0 1 2 10 and 1e30 on a line: the median is still 2. The objective is about 1e30,
    # so its float64 changes are rounding noise: the stopping rule must not rely on them.
    points = np.array([0, 1, 2, 10, 1e30], np.float32)[:, None]
    np.testing.assert_allclose(run(geometric_median(), points), [2.0], atol=1e-4)
    z, _ = weiszfeld(points, nu=1e-6, max_iter=100, ftol=1e-12)
    np.testing.assert_allclose(z, [2.0], atol=1e-6)


def test_two_points_give_a_point_between_them():
    # any point of the segment is a geometric median; the iterations stay at its middle
    np.testing.assert_array_equal(run(geometric_median(), [[0, 0], [2, 4]]), [1.0, 2.0])


def test_identical_points_stop_after_one_iteration():
    same = np.tile(np.array([[1.5, -2.0, 3.0]], np.float32), (4, 1))
    z, iterations = weiszfeld(same, nu=1e-6, max_iter=100, ftol=1e-6)
    assert iterations == 1
    np.testing.assert_array_equal(z, same[0])
