"""Partition an array dataset (x, y) into federated clients: IID, label skew, quantity skew, groups.

Each partitioner returns one sorted index array per client; together they cover
every example exactly once and depend only on their arguments (seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fedlake.data.base import ClientDataset, InMemoryClientData

__all__ = [
    "SCHEMES",
    "by_column",
    "dirichlet",
    "hash_split",
    "iid",
    "partition_dataset",
    "quantity_skew",
    "split_indices",
]

SCHEMES = ("iid", "dirichlet", "quantity_skew", "by_column")


def _check_counts(num_examples: int, num_clients: int, min_size: int = 1) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise TypeError(f"num_clients must be an integer, got {num_clients!r}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if num_clients > num_examples:
        raise ValueError(
            f"num_clients ({num_clients}) exceeds the number of examples ({num_examples})"
        )
    if min_size * num_clients > num_examples:
        raise ValueError(
            f"cannot give {num_clients} clients >= {min_size} examples each from "
            f"{num_examples} examples; lower min_size or num_clients"
        )


def iid(num_examples: int, num_clients: int, *, seed: int = 0) -> list[np.ndarray]:
    """Shuffle and deal ``num_examples`` into ``num_clients`` near-equal shards."""
    _check_counts(num_examples, num_clients)
    perm = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(perm, num_clients)]


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    seed: int = 0,
    min_size: int = 10,
    max_retries: int = 1000,
) -> list[np.ndarray]:
    """Label skew: each class is spread over clients by proportions drawn from Dir(alpha).

    Smaller ``alpha`` means more skew (Hsu, Qi and Brown, "Measuring the Effects
    of Non-Identical Data Distribution for Federated Visual Classification",
    arXiv 2019). As in the usual implementation (Li et al., "Federated Learning
    on Non-IID Data Silos: An Experimental Study", ICDE 2022), clients that
    already hold an equal share get no more examples, and the whole draw is
    repeated until every client holds at least ``min_size`` examples.

    Raises:
        ValueError: bad arguments, or no valid draw within ``max_retries``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if max_retries < 1:
        raise ValueError(f"max_retries must be >= 1, got {max_retries}")
    n = len(labels)
    _check_counts(n, num_clients, min_size)
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_retries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, dtype=np.int64)
        for members in classes:
            members = rng.permutation(members)
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            p = p * (sizes < n / num_clients)
            if p.sum() <= 0:  # every open client drew ~0: share evenly among them
                p = (sizes < n / num_clients).astype(float)
            cuts = (np.cumsum(p / p.sum()) * len(members)).astype(np.int64)[:-1]
            for j, chunk in enumerate(np.split(members, cuts)):
                parts[j].append(chunk)
                sizes[j] += len(chunk)
        if sizes.min() >= min_size:
            return [np.sort(np.concatenate(p)) for p in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw gave all {num_clients} clients >= {min_size} "
        f"examples in {max_retries} tries; raise alpha, or lower num_clients or min_size"
    )


def quantity_skew(
    num_examples: int,
    num_clients: int,
    *,
    method: Literal["dirichlet", "lognormal"] = "dirichlet",
    alpha: float = 0.5,
    sigma: float = 1.0,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Quantity skew: IID examples, client sizes from Dir(alpha) or lognormal(0, sigma) shares.

    Every client gets ``min_size`` examples plus its share of the rest (Li et
    al., "Federated Learning on Non-IID Data Silos", ICDE 2022).
    """
    _check_counts(num_examples, num_clients, min_size)
    if method not in ("dirichlet", "lognormal"):
        raise ValueError(f"method must be 'dirichlet' or 'lognormal', got {method!r}")
    if method == "dirichlet" and not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if method == "lognormal" and not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    if method == "dirichlet":
        shares = rng.dirichlet(np.full(num_clients, float(alpha)))
    else:
        shares = rng.lognormal(0.0, sigma, num_clients)
    shares = np.nan_to_num(shares / shares.sum(), nan=1.0 / num_clients)
    sizes = min_size + rng.multinomial(num_examples - min_size * num_clients, shares)
    perm = rng.permutation(num_examples)
    return [np.sort(part) for part in np.split(perm, np.cumsum(sizes)[:-1])]


def by_column(groups: np.ndarray | Sequence[object]) -> list[np.ndarray]:
    """Natural split: one client per distinct value of ``groups`` (in sorted value order)."""
    values = np.asarray(groups)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {values.shape}")
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    return list(np.split(order, np.cumsum(counts)[:-1]))


def split_indices(
    n: int, *, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A shuffled train/test split of ``range(n)``: round(test_fraction * n) test, >= 1 train."""
    if n < 1:
        raise ValueError(f"cannot split {n} examples; need at least 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = min(n - 1, int(np.floor(test_fraction * n + 0.5)))
    perm = rng.permutation(n)
    return perm[n_test:], perm[:n_test]


def hash_split(x: np.ndarray, y: np.ndarray, *, test_fraction: float) -> np.ndarray:
    """Test mask from a splitmix64 hash of each row's bytes: deterministic, order-free, >= 1 train.

    Identical rows always land on the same side, so duplicates cannot leak
    from train into test.
    """
    n = len(y)
    rows = np.ascontiguousarray(x).reshape(n, -1).view(np.uint8).reshape(n, -1)
    label = np.ascontiguousarray(y, dtype="<i8").reshape(n, 1).view(np.uint8)
    raw = np.concatenate([rows, label], axis=1)
    words = np.ascontiguousarray(np.pad(raw, ((0, 0), (0, -raw.shape[1] % 8)))).view("<u8")
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for j in range(words.shape[1]):
        z = h ^ words[:, j]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = z ^ (z >> np.uint64(31))
    u = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    test = u < test_fraction
    if n and test.all():  # keep at least one training row
        test[np.argmax(u)] = False
    return test


def partition_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    scheme: str,
    num_clients: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    alpha: float = 0.5,
    groups: np.ndarray | Sequence[object] | None = None,
    min_size: int | None = None,
) -> InMemoryClientData:
    """Partition (x, y) into clients, each with its own seeded train/test split.

    Args:
        scheme: ``iid``, ``dirichlet`` (label skew, concentration ``alpha``),
            ``quantity_skew`` (Dirichlet(``alpha``) client sizes) or
            ``by_column`` (one client per distinct value of ``groups``; client
            ids are the values as strings).
        num_clients: number of clients; optional for ``by_column``.
        min_size: smallest client for ``dirichlet``/``quantity_skew``; by
            default ``min(10, n // num_clients)`` and ``1`` respectively.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y lengths differ: {len(x)} != {len(y)}")
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or len(y) == 0):
        raise ValueError(f"y must be a 1-D integer label array, got {y.dtype} {y.shape}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; accepted: {', '.join(SCHEMES)}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(y)
    if scheme == "by_column":
        if groups is None or len(groups) != n:
            raise ValueError("scheme 'by_column' needs groups with one value per example")
        parts = by_column(groups)
        if num_clients is not None and num_clients != len(parts):
            raise ValueError(f"num_clients is {num_clients} but groups has {len(parts)} values")
        names = [str(v) for v in np.unique(np.asarray(groups))]
    else:
        if num_clients is None:
            raise ValueError(f"scheme {scheme!r} needs num_clients")
        _check_counts(n, num_clients)
        if scheme == "iid":
            parts = iid(n, num_clients, seed=seed)
        elif scheme == "dirichlet":
            low = min(10, n // num_clients) if min_size is None else min_size
            parts = dirichlet(y, num_clients, alpha=alpha, seed=seed, min_size=low)
        else:
            low = 1 if min_size is None else min_size
            parts = quantity_skew(n, num_clients, alpha=alpha, seed=seed, min_size=low)
        width = max(3, len(str(num_clients - 1)))
        names = [f"client-{i:0{width}d}" for i in range(num_clients)]
    x = x.astype(np.float32, copy=False)
    y = y.astype(np.int64, copy=False)
    datasets = {}
    for i, (name, part) in enumerate(zip(names, parts, strict=True)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        train, test = split_indices(len(part), test_fraction=test_fraction, rng=rng)
        datasets[name] = ClientDataset(x[part[train]], y[part[train]], x[part[test]], y[part[test]])
    return InMemoryClientData(datasets)
