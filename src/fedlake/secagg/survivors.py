"""Survivor-set rules of SecAgg+: who can stay, which secrets are needed, when to stop.

Pure functions of the graph, the threshold t and the survivor sets U2 (shared keys) and
U3 (sent masked inputs); the server applies them when it closes a stage.
"""

from __future__ import annotations

from collections.abc import Set

from fedlake.secagg.graph import Graph

__all__ = ["components", "needed_secrets", "prune", "unrecoverable"]


def prune(members: Set[int], graph: Graph, threshold: int) -> tuple[frozenset[int], set[int]]:
    """The largest subset where everyone keeps >= t neighbours inside, and those removed.

    A client with fewer than t neighbours in the set could not have its secrets rebuilt,
    and leaving it out can leave others short: peel until nothing changes.
    """
    kept, removed = set(members), set()
    changed = True
    while changed:
        changed = False
        for u in sorted(kept):
            if len(graph.neighbours(u) & kept) < threshold:
                kept.discard(u)
                removed.add(u)
                changed = True
    return frozenset(kept), removed


def needed_secrets(
    graph: Graph, shared: Set[int], survivors: Set[int]
) -> dict[int, frozenset[int]]:
    """Each secret the server must rebuild, keyed by its owner, with its possible holders.

    A survivor's self-mask seed (held by its surviving neighbours), and the mask key of
    each client that shared but dropped and has surviving neighbours (whose masked inputs
    carry a pairwise mask with it).
    """
    needed = {u: graph.neighbours(u) & survivors for u in survivors}
    for v in set(shared) - set(survivors):
        holders = graph.neighbours(v) & survivors
        if holders:
            needed[v] = frozenset(holders)
    return {u: frozenset(h) for u, h in needed.items()}


def components(nodes: Set[int], graph: Graph) -> list[set[int]]:
    """Connected components of the subgraph induced by ``nodes``."""
    left, parts = set(nodes), []
    while left:
        frontier = [left.pop()]
        part = set(frontier)
        while frontier:
            for v in graph.neighbours(frontier.pop()) & left:
                left.discard(v)
                part.add(v)
                frontier.append(v)
        parts.append(part)
    return parts


def unrecoverable(
    graph: Graph, threshold: int, shared: Set[int], survivors: Set[int]
) -> str | None:
    """Why unmasking ``survivors`` would fail or expose partial sums; None when it is safe.

    Fails when there are fewer than t survivors or some needed secret has fewer than t
    holders among them; exposes partial sums when the survivors' graph is disconnected
    (the server could unmask each part's sum on its own).
    """
    t = threshold
    if len(survivors) < t:
        return f"only {len(survivors)} masked inputs arrived, t={t} needed"
    for u, holders in sorted(needed_secrets(graph, shared, survivors).items()):
        if len(holders) < t:
            kind = "self-mask seed" if u in survivors else "mask key (dropped)"
            return (
                f"client {u}'s {kind} needs t={t} shares, but only {len(holders)} of its "
                f"neighbours sent masked inputs: {sorted(holders)}"
            )
    pieces = components(survivors, graph)
    if len(pieces) > 1:
        return (
            f"the survivors' graph splits into {len(pieces)} parts of sizes "
            f"{sorted(map(len, pieces))}: their partial sums would be exposed"
        )
    return None
