"""Krum and Multi-Krum: exact numbers on toy cohorts, worked out by hand below."""

import numpy as np
import pytest
from aggregators.cohorts import run, updates

from fedlake.aggregators import krum, krum_scores, multi_krum
from fedlake.aggregators.krum import krum_neighbours

# Five clients in 2-D; E is far away. n = 5, f = 1, so Krum sums the n - f - 2 = 2
# smallest squared distances to the other clients.
#
#          A=(0,0)  B=(1,0)  C=(0,2)  D=(1,1)  E=(8,7)
#   A         -        1        4        2      113
#   B         1        -        5        1       98
#   C         4        5        -        2       89
#   D         2        1        2        -       85
#   E       113       98       89       85        -
#
# scores (2 nearest): A 1+2=3, B 1+1=2, C 2+4=6, D 1+2=3, E 85+89=174
# order of scores: B (2), then A and D tied at 3 (A first: lower cohort index), C, E.
# (Small integers: every distance is computed exactly, and the A/D tie is a real tie.)
FIVE = [[0, 0], [1, 0], [0, 2], [1, 1], [8, 7]]
FIVE_SCORES = [3, 2, 6, 3, 174]


def test_krum_scores_sum_the_n_minus_f_minus_2_nearest():
    x = np.asarray(FIVE, dtype=np.float64)
    sq = ((x[:, None] - x[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(krum_scores(sq, f=1), FIVE_SCORES)


def test_krum_returns_the_lowest_score():
    np.testing.assert_array_equal(run(krum(f=1), FIVE), np.array([1, 0], np.float32))  # B


def test_multi_krum_with_explicit_m_averages_the_m_best():
    # m = 3: B, A, D -> ((1+0+1)/3, (0+0+1)/3)
    out = run(multi_krum(f=1, m=3), FIVE)
    np.testing.assert_allclose(out, [2 / 3, 1 / 3], rtol=1e-6)


def test_multi_krum_ties_go_to_the_client_first_in_cohort_order():
    # m = 2: B, then A (tied with D at 3, but A comes first) -> (0.5, 0)
    np.testing.assert_array_equal(run(multi_krum(f=1, m=2), FIVE), [0.5, 0.0])
    # with D moved before A, D wins the tie: B and D -> (1, 0.5)
    reordered = [FIVE[1], FIVE[3], FIVE[0], FIVE[2], FIVE[4]]
    np.testing.assert_array_equal(run(multi_krum(f=1, m=2), reordered), [1.0, 0.5])
    # 0, 1, 3, 4 with f = 0 (k = 2): scores 0: 1+9=10, 1: 1+4=5, 3: 1+4=5, 4: 1+9=10
    np.testing.assert_array_equal(run(krum(f=0), [0, 1, 3, 4]), [1.0])
    np.testing.assert_array_equal(run(krum(f=0), [4, 3, 1, 0]), [3.0])


def test_multi_krum_default_m_is_n_minus_f():
    # m = n - f = 4: B, A, D, C -> ((1+0+1+0)/4, (0+0+1+2)/4) = (0.5, 0.75); E is left out
    np.testing.assert_array_equal(run(multi_krum(f=1), FIVE), [0.5, 0.75])
    # f = 2 needs n >= 7; with 7 clients the default m = 5 drops the two worst scores.
    # 1-D points 0, 1, 2, 3, 4, 50, 60: k = 7 - 2 - 2 = 3 neighbours;
    # scores 0: 1+4+9=14, 1: 1+1+4=6, 2: 1+1+4=6, 3: 1+1+4=6, 4: 1+4+9=14,
    # 50: 100+46^2+47^2 = 100+2116+2209 = 4425, 60: 100+56^2+57^2 = 100+3136+3249 = 6485
    # -> the five best are 0..4, mean 2
    np.testing.assert_array_equal(run(multi_krum(f=2), [0, 1, 2, 3, 4, 50, 60]), [2.0])


def test_krum_neighbour_count_is_exactly_n_minus_f_minus_2():
    # Six 1-D clients 0, 1, 2, 5, 7, 8 with f = 1: n - f - 2 = 3 neighbours.
    # squared distances to the others, sorted, and the sums of the first k of them:
    #   point  sorted sq. distances   k=2  k=3  k=4
    #     0    1  4  25 49 64           5   30   79
    #     1    1  1  16 36 49           2   18   54
    #     2    1  4   9 25 36           5   14   39
    #     5    4  9   9 16 25          13   22   38
    #     7    1  4  25 36 49           5   30   66
    #     8    1  9  36 49 64          10   46   95
    # k = 3 (n - f - 2) picks 2; k = 4 (n - f - 1) would pick 5; k = 2 (n - f - 3) would pick 1.
    points = [0, 1, 2, 5, 7, 8]
    assert krum_neighbours(6, 1) == 3
    np.testing.assert_array_equal(run(krum(f=1), points), [2.0])
    # f = 0 makes it 4 neighbours, the n - f - 1 count above: the winner becomes 5
    np.testing.assert_array_equal(run(krum(f=0), points), [5.0])
    x = np.asarray(points, dtype=np.float64)
    sq = (x[:, None] - x[None]) ** 2
    np.testing.assert_array_equal(krum_scores(sq, f=1), [30, 18, 14, 22, 30, 46])
    np.testing.assert_array_equal(krum_scores(sq, f=0), [79, 54, 39, 38, 66, 95])
    np.testing.assert_array_equal(krum_scores(sq, f=2), [5, 2, 5, 13, 5, 10])


def test_krum_neighbour_count_never_drops_below_one():
    assert krum_neighbours(3, 0) == 1
    assert krum_neighbours(5, 4) == 1


def test_krum_returns_a_copy_not_the_clients_vector():
    ups = updates(FIVE)
    out, _ = krum(f=1).aggregate(ups, None)
    out[0] = 99.0
    np.testing.assert_array_equal(ups[1].delta, [1, 0])


def test_krum_names_and_min_updates():
    assert krum(f=1).name == "krum" and krum(f=1).min_updates == 5
    assert multi_krum(f=1).name == "multi_krum" and multi_krum(f=1).min_updates == 5
    assert multi_krum(f=1, m=1).name == "krum"
    # m above 2f + 3 raises the minimum to m
    assert multi_krum(f=1, m=8).min_updates == 8
    assert not krum(f=1).linear and krum(f=1).fold is None


def test_multi_krum_refuses_fewer_updates_than_m():
    with pytest.raises(
        ValueError, match=r"multi_krum needs at least 6 updates .*n >= m = 6.*got 5"
    ):
        run(multi_krum(f=1, m=6), FIVE)
