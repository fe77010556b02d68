"""The communication graph and the choice of (k, t): regular, shared, and refusing unsafe t."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.secagg.graph import (
    abort_probability,
    check_parameters,
    choose_parameters,
    harary_graph,
    leak_probability,
)


def connected(graph, removed=frozenset()):
    nodes = set(graph.nodes) - set(removed)
    start = next(iter(nodes))
    seen, frontier = {start}, [start]
    while frontier:
        for v in graph.neighbours(frontier.pop()) - set(removed) - seen:
            seen.add(v)
            frontier.append(v)
    return seen == nodes


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), data=st.data(), seed=st.binary(max_size=8))
def test_harary_graph_is_k_regular_symmetric_and_connected(n, data, seed):
    k = data.draw(st.integers(min(2, n - 1), n - 1).filter(lambda k: k % 2 == 0 or n % 2 == 0))
    nodes = data.draw(st.lists(st.integers(1, 2**32 - 1), min_size=n, max_size=n, unique=True))
    graph = harary_graph(nodes, degree=k, seed=seed)
    assert graph.nodes == tuple(sorted(nodes)) and graph.degree == k
    for u in graph.nodes:
        assert len(graph.neighbours(u)) == k and u not in graph.neighbours(u)
        assert all(u in graph.neighbours(v) for v in graph.neighbours(u))
    assert connected(graph)


def test_harary_graph_survives_any_k_minus_one_removals():
    rng = random.Random(0)
    graph = harary_graph(range(1, 41), degree=6, seed=b"s")
    for _ in range(200):
        assert connected(graph, set(rng.sample(graph.nodes, 5)))
    ring_cut = harary_graph(range(1, 41), degree=2, seed=b"s")  # k = 2: two removals cut it
    assert not all(
        connected(ring_cut, {u, v}) for u in ring_cut.nodes for v in ring_cut.nodes if u < v
    )


def test_same_seed_same_graph_other_seed_other_graph():
    a = harary_graph(range(1, 31), degree=4, seed=b"public seed")
    assert a == harary_graph(list(reversed(range(1, 31))), degree=4, seed=b"public seed")
    assert a != harary_graph(range(1, 31), degree=4, seed=b"other seed")


def test_complete_graph_when_k_is_n_minus_one():
    for n in (5, 6):
        graph = harary_graph(range(1, n + 1), degree=n - 1, seed=b"")
        assert all(graph.neighbours(u) == set(range(1, n + 1)) - {u} for u in graph.nodes)


@pytest.mark.parametrize(
    ("nodes", "k", "match"),
    [
        (range(1, 6), 5, "degree k must be in \\[2, 4\\] for 5 clients, got 5"),
        (range(1, 6), 1, "degree k must be in \\[2, 4\\]"),
        (range(1, 6), 3, "k \\* n even: got k=3 with n=5"),
        ([1], 1, "expected >= 2 clients, got 1"),
        ([1, 1, 2], 1, "client ids must be distinct"),
    ],
)
def test_impossible_graphs_are_refused(nodes, k, match):
    with pytest.raises(ValueError, match=match):
        harary_graph(nodes, degree=k, seed=b"")


def test_check_parameters_refuses_t_at_most_half_k():
    with pytest.raises(ValueError, match="t must exceed k / 2 = 5, got t=5: a server claiming"):
        check_parameters(100, 10, 5)
    check_parameters(100, 10, 6)


def test_check_parameters_refuses_t_above_k_or_survivors():
    with pytest.raises(ValueError, match="t must be <= k = 10"):
        check_parameters(100, 10, 11)
    # 30 of 100 dropping leaves 10 - 3 = 7 of a client's 10 neighbours on average.
    check_parameters(100, 10, 7, expected_dropouts=30)
    with pytest.raises(ValueError, match="t=8 exceeds the 7 of a client's k=10 neighbours"):
        check_parameters(100, 10, 8, expected_dropouts=30)
    # The complete graph: exactly n - 1 - d survivors among a survivor's neighbours.
    check_parameters(10, 9, 7, expected_dropouts=2)
    with pytest.raises(ValueError, match="exceeds the 6"):
        check_parameters(10, 9, 7, expected_dropouts=3)
    with pytest.raises(ValueError, match="expected_dropouts must be < n = 10"):
        check_parameters(10, 9, 7, expected_dropouts=10)


@pytest.mark.parametrize(("n", "rate"), [(100, 0.05), (1000, 0.1), (10**6, 0.1), (10**4, 0.3)])
def test_chosen_parameters_are_safe_and_meet_the_targets(n, rate):
    p = choose_parameters(n, dropout_rate=rate)
    check_parameters(n, p.degree, p.threshold, expected_dropouts=int(rate * n))
    assert p.abort_bound <= 2**-20 and p.leak_bound <= 2**-40
    assert p.abort_bound == abort_probability(n, p.degree, p.threshold, rate)
    if p.degree > 2:  # the smallest degree: the one below misses the abort target
        smaller = choose_parameters(n, dropout_rate=rate, failure_bits=1)
        assert smaller.degree <= p.degree


def test_degree_grows_logarithmically():
    degrees = [choose_parameters(n, dropout_rate=0.1).degree for n in (10**3, 10**4, 10**5, 10**6)]
    assert degrees == sorted(degrees) and degrees[-1] < 100 and degrees[-1] - degrees[0] < 30


def test_corrupt_clients_raise_the_threshold():
    honest = choose_parameters(1000, dropout_rate=0.1)
    wary = choose_parameters(1000, dropout_rate=0.1, corrupt_rate=0.1)
    assert wary.threshold - wary.degree / 2 > honest.threshold - honest.degree / 2
    assert wary.leak_bound <= 2**-40
    assert leak_probability(1000, wary.degree, wary.threshold, 0.1) == wary.leak_bound


def test_small_cohorts_say_what_the_complete_graph_gives():
    with pytest.raises(ValueError, match="complete graph \\(k=9, t=5\\) aborts with probability"):
        choose_parameters(10, dropout_rate=0.1)
    relaxed = choose_parameters(10, dropout_rate=0.1, failure_bits=6)
    assert relaxed.abort_bound <= 2**-6


def test_probability_edge_cases():
    assert abort_probability(10, 4, 3, 0.0) == 0.0
    assert leak_probability(10, 4, 3, 0.0) == 0.0
    assert abort_probability(10, 4, 3, 0.999) == 1.0
