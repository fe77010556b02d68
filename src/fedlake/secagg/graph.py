"""The SecAgg+ communication graph and the choice of its degree k and threshold t.

Bell et al. (CCS 2020) replace Bonawitz et al.'s complete graph with a sparse one: a
client masks with, and secret-shares to, only its k = O(log n) neighbours, so its work is
O(k + d) instead of O(n + d). We use the Harary graph H(k, n) (each client joined to the
k/2 nearest on each side of a ring; for odd k, also to the opposite one), which is
k-regular and k-connected, under a uniformly random relabelling derived from a public
seed. Every party computes the same graph from (clients, k, seed); k = n - 1 is the
complete graph of the original SecAgg.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from fedlake.core.checks import check_fraction, check_int

__all__ = [
    "Graph",
    "Parameters",
    "abort_probability",
    "check_parameters",
    "choose_parameters",
    "harary_graph",
    "leak_probability",
]


@dataclass(frozen=True)
class Graph:
    """An undirected k-regular graph over client ids.

    Attributes:
        nodes: the client ids, sorted.
        degree: k, each client's number of neighbours.
        adjacency: each client's neighbours.
    """

    nodes: tuple[int, ...]
    degree: int
    adjacency: Mapping[int, frozenset[int]]

    def neighbours(self, node: int) -> frozenset[int]:
        """The neighbours of ``node`` (a KeyError for a node not in the graph)."""
        return self.adjacency[node]


def _check_shape(n: int, degree: int) -> None:
    """Raise ValueError unless a k-regular Harary graph on n nodes exists."""
    low = min(2, n - 1)  # k = 1 pairs clients off: each pair's sum would be exposed
    if not low <= degree <= n - 1:
        raise ValueError(f"degree k must be in [{low}, {n - 1}] for {n} clients, got {degree}")
    if degree % 2 and n % 2:
        raise ValueError(
            f"a k-regular graph needs k * n even: got k={degree} with n={n} clients "
            f"(use k={degree - 1} or k={degree + 1})"
        )


def harary_graph(nodes: Sequence[int], *, degree: int, seed: bytes) -> Graph:
    """The Harary graph H(degree, len(nodes)) over ``nodes`` relabelled by ``seed``.

    The relabelling sorts nodes by SHA-256(seed, node): portable across machines and
    library versions (a numpy generator's stream is not guaranteed to be).
    """
    ordered = sorted(nodes)
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"client ids must be distinct, got {ordered}")
    n = len(ordered)
    if n < 2:
        raise ValueError(f"expected >= 2 clients, got {n}")
    degree = check_int("degree", degree, low=1)
    _check_shape(n, degree)

    def rank(node: int) -> bytes:
        """The node's place on the ring: a hash of the public seed and its id."""
        return hashlib.sha256(b"fedlake-secagg/graph" + seed + node.to_bytes(8, "big")).digest()

    ring = sorted(ordered, key=rank)
    adjacency: dict[int, set[int]] = {node: set() for node in ordered}
    for i, node in enumerate(ring):
        for step in range(1, degree // 2 + 1):
            adjacency[node].update((ring[(i + step) % n], ring[(i - step) % n]))
        if degree % 2:
            adjacency[node].add(ring[(i + n // 2) % n])
    return Graph(
        nodes=tuple(ordered),
        degree=degree,
        adjacency={node: frozenset(peers) for node, peers in adjacency.items()},
    )


def check_parameters(n: int, k: int, t: int, expected_dropouts: int = 0) -> None:
    """Refuse a (k, t) that is unsafe or cannot finish, saying which and why.

    Args:
        n: clients in the round.
        k: neighbours per client (n - 1: complete graph).
        t: Shamir threshold, shares needed to rebuild a client's secret.
        expected_dropouts: clients expected to drop out over the round.

    Raises:
        ValueError: ``t <= k / 2`` (a server that reports a client dropped to some of its
            neighbours and alive to the others collects t shares of both its self-mask
            seed and its mask key, and unmasks its input); ``t > k`` (nothing can ever be
            rebuilt); or ``t`` above the neighbours expected to survive (the round aborts).
    """
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1)
    t = check_int("t", t, low=1)
    _check_shape(n, k)
    dropouts = check_int("expected_dropouts", expected_dropouts, low=0)
    if dropouts >= n:
        raise ValueError(f"expected_dropouts must be < n = {n}, got {dropouts}")
    if 2 * t <= k:
        raise ValueError(
            f"t must exceed k / 2 = {k / 2:g}, got t={t}: a server claiming a client dropped "
            f"to some neighbours and alive to others would collect t shares of both its "
            f"mask seed and its mask key and unmask its input"
        )
    if t > k:
        raise ValueError(f"t must be <= k = {k} (a client's share holders), got t={t}")
    survivors = k - math.ceil(k * dropouts / n)
    if t > survivors:
        raise ValueError(
            f"t={t} exceeds the {survivors} of a client's k={k} neighbours expected to "
            f"survive {dropouts} dropouts among {n} clients: the round would abort"
        )


def _tail(k: int, p: float, m: int) -> float:
    """P[Binomial(k, p) >= m]."""
    if m <= 0:
        return 1.0
    if m > k or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    logp, logq = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(m, k + 1):
        log_comb = math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
        total += math.exp(log_comb + i * logp + (k - i) * logq)
    return min(total, 1.0)


def abort_probability(n: int, k: int, t: int, dropout_rate: float) -> float:
    """Union bound on P[some client keeps fewer than t of its k neighbours].

    Dropouts are modelled as independent with probability ``dropout_rate`` each.
    """
    return min(1.0, n * _tail(k, dropout_rate, k - t + 1))


def leak_probability(n: int, k: int, t: int, corrupt_rate: float) -> float:
    """Union bound on P[some client has >= 2t - k corrupted neighbours].

    With c corrupted neighbours (which reveal both shares) and a server lying about
    dropouts to the k - c others, it gets t shares of both secrets exactly when c >= 2t - k.
    """
    return min(1.0, n * _tail(k, corrupt_rate, 2 * t - k))


class Parameters(NamedTuple):
    """A chosen (k, t) with its abort and leak bounds (union bounds over clients)."""

    degree: int
    threshold: int
    abort_bound: float
    leak_bound: float


def choose_parameters(
    n: int,
    *,
    dropout_rate: float,
    corrupt_rate: float = 0.0,
    failure_bits: int = 20,
    security_bits: int = 40,
) -> Parameters:
    """The smallest degree k and its smallest safe threshold t for ``n`` clients.

    Safe means t > k / 2 and leak probability <= 2^-security_bits; then k is the smallest
    whose abort probability is <= 2^-failure_bits (Bell et al., CCS 2020, Section 3:
    k = O(log n) suffices for a constant dropout rate).

    Raises:
        ValueError: even the complete graph (k = n - 1) misses a target; the message gives
            its bounds so the caller can relax ``failure_bits`` knowingly.
    """
    n = check_int("n", n, low=2)
    dropout_rate = check_fraction("dropout_rate", dropout_rate)
    corrupt_rate = check_fraction("corrupt_rate", corrupt_rate, high=0.5)
    failure = 2.0 ** -check_int("failure_bits", failure_bits, low=1)
    security = 2.0 ** -check_int("security_bits", security_bits, low=1)
    for k in [*range(2, n - 1, 2), n - 1]:
        chosen = _safe_threshold(n, k, corrupt_rate, security, dropout_rate)
        if chosen is not None and chosen.abort_bound <= failure:
            return chosen
    if chosen is None:
        raise ValueError(
            f"no (k, t) keeps the leak probability <= 2^-{security_bits} with {n} clients "
            f"and corrupt_rate {corrupt_rate:g}, not even the complete graph"
        )
    raise ValueError(
        f"no k <= {n - 1} keeps the abort probability <= 2^-{failure_bits} with {n} clients "
        f"and dropout_rate {dropout_rate:g}: the complete graph (k={chosen.degree}, "
        f"t={chosen.threshold}) aborts with probability <= {chosen.abort_bound:.3g}; pass a "
        f"smaller failure_bits to accept that"
    )


def _safe_threshold(
    n: int, k: int, corrupt_rate: float, security: float, dropout_rate: float
) -> Parameters | None:
    """The smallest t > k / 2 whose leak bound is <= ``security`` for degree k, if any."""
    for t in range(k // 2 + 1, k + 1):
        leak = leak_probability(n, k, t, corrupt_rate)
        if leak <= security:
            return Parameters(k, t, abort_probability(n, k, t, dropout_rate), leak)
    return None
