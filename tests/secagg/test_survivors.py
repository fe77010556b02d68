"""Survivor-set rules: peeling, the secrets to rebuild, and when unmasking must not start."""

from fedlake.secagg.graph import harary_graph
from fedlake.secagg.survivors import components, needed_secrets, prune, unrecoverable

RING = harary_graph(range(1, 9), degree=2, seed=b"ring")  # a cycle: t = 2 needs both sides


def ring_order():
    order, previous, node = [1], None, 1
    while len(order) < 8:
        nxt = min(RING.neighbours(node) - {previous})
        previous, node = node, nxt
        order.append(node)
    return order


def test_prune_peels_until_stable():
    order = ring_order()
    kept, removed = prune(set(order) - {order[0]}, RING, 2)
    # Removing one node of a cycle leaves a path whose ends have one neighbour: with
    # t = 2 the peeling eats the whole path.
    assert kept == frozenset() and removed == set(order[1:])
    kept, removed = prune(set(order), RING, 2)
    assert kept == frozenset(order) and not removed


def test_needed_secrets_lists_seeds_of_survivors_and_keys_of_dropped_neighbours():
    graph = harary_graph(range(1, 11), degree=4, seed=b"s")
    shared = set(range(1, 11))
    survivors = shared - {3}
    needed = needed_secrets(graph, shared, survivors)
    assert set(needed) == shared  # 3 dropped after sharing: its key is needed
    assert needed[3] == graph.neighbours(3)
    assert all(needed[u] == graph.neighbours(u) - {3} for u in survivors)
    # A client that never shared leaves nothing to rebuild.
    assert 3 not in needed_secrets(graph, survivors, survivors)


def test_components_and_unrecoverable():
    order = ring_order()
    two_arcs = set(order) - {order[0], order[4]}
    assert sorted(map(len, components(two_arcs, RING))) == [3, 3]
    graph = harary_graph(range(1, 11), degree=4, seed=b"s")
    everyone = set(range(1, 11))
    assert unrecoverable(graph, 3, everyone, everyone) is None
    assert "only 2 masked inputs arrived, t=3" in unrecoverable(graph, 3, everyone, {1, 2})
    u = 1
    short = everyone - set(sorted(graph.neighbours(u))[:2])
    assert f"client {u}'s self-mask seed needs t=3" in unrecoverable(graph, 3, everyone, short)
