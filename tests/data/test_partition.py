"""Partitioners: coverage, determinism, skew, natural splits and per-client train/test splits."""

import numpy as np
import pytest

from fedlake.data.partition import (
    by_column,
    dirichlet,
    hash_split,
    iid,
    partition_dataset,
    quantity_skew,
    split_indices,
)

LABELS = np.repeat(np.arange(10), 100)  # 1,000 examples, 10 balanced classes


def _covers(parts, n):
    joined = np.concatenate(parts)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


def _skew(parts, labels, k=10):
    """Mean total-variation distance between each client's label mix and the global one."""
    glob = np.bincount(labels, minlength=k) / len(labels)
    return np.mean(
        [0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - glob).sum() for p in parts]
    )


def test_iid_covers_everything_in_near_equal_shards():
    parts = iid(103, 10, seed=1)
    assert _covers(parts, 103)
    assert {len(p) for p in parts} == {10, 11}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(103, 10, seed=1), strict=True))
    assert not np.array_equal(parts[0], iid(103, 10, seed=2)[0])


def test_dirichlet_covers_respects_min_size_and_is_deterministic():
    parts = dirichlet(LABELS, 20, alpha=0.3, seed=0, min_size=10)
    assert len(parts) == 20 and _covers(parts, 1000)
    assert min(len(p) for p in parts) >= 10
    again = dirichlet(LABELS, 20, alpha=0.3, seed=0, min_size=10)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet(LABELS, 20, alpha=0.3, seed=1, min_size=10)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_skew_is_stronger_for_small_alpha():
    skews = [_skew(dirichlet(LABELS, 10, alpha=a, seed=0), LABELS) for a in (0.05, 1.0, 100.0)]
    assert skews[0] > skews[1] > skews[2]
    assert skews[0] > 0.5 and skews[2] < 0.1


def test_dirichlet_errors():
    with pytest.raises(ValueError, match="alpha must be > 0, got 0"):
        dirichlet(LABELS, 5, alpha=0)
    with pytest.raises(ValueError, match="cannot give 20 clients >= 60 examples each"):
        dirichlet(LABELS, 20, alpha=1.0, min_size=60)
    with pytest.raises(ValueError, match="in 3 tries; raise alpha"):
        dirichlet(np.repeat([0, 1], 50), 10, alpha=0.01, min_size=10, max_retries=3)
    with pytest.raises(ValueError, match="num_clients .2000. exceeds the number of examples"):
        dirichlet(LABELS, 2000, alpha=1.0, min_size=0)


def test_quantity_skew_sizes_vary_labels_do_not():
    for method in ("dirichlet", "lognormal"):
        parts = quantity_skew(1000, 10, method=method, alpha=0.5, sigma=1.5, seed=0, min_size=5)
        sizes = np.array([len(p) for p in parts])
        assert _covers(parts, 1000) and sizes.min() >= 5
        assert sizes.max() > 3 * sizes.min()
    even = quantity_skew(1000, 10, method="lognormal", sigma=0.0, seed=0)
    assert max(len(p) for p in even) < 150
    with pytest.raises(ValueError, match="method must be 'dirichlet' or 'lognormal'"):
        quantity_skew(10, 2, method="zipf")
    with pytest.raises(ValueError, match="sigma must be >= 0, got -1"):
        quantity_skew(10, 2, method="lognormal", sigma=-1)


def test_by_column_one_client_per_value():
    groups = np.array(["b", "a", "c", "a", "b", "a"])
    parts = by_column(groups)
    assert [p.tolist() for p in parts] == [[1, 3, 5], [0, 4], [2]]
    assert [p.tolist() for p in by_column([3, 1, 3])] == [[1], [0, 2]]
    with pytest.raises(ValueError, match="non-empty 1-D"):
        by_column([])


def test_split_indices():
    train, test = split_indices(10, test_fraction=0.2, rng=np.random.default_rng(0))
    assert len(train) == 8 and len(test) == 2
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(10))
    train, test = split_indices(1, test_fraction=0.5, rng=np.random.default_rng(0))
    assert len(train) == 1 and len(test) == 0
    with pytest.raises(ValueError, match="cannot split 0 examples"):
        split_indices(0, test_fraction=0.2, rng=np.random.default_rng(0))


def test_hash_split_is_order_free_and_keeps_duplicates_together():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3, 2)).astype(np.float32)
    x[1000:1100] = x[:100]  # 100 duplicated rows
    y = rng.integers(0, 5, 2000)
    y[1000:1100] = y[:100]
    test = hash_split(x, y, test_fraction=0.3)
    assert test.dtype == bool and 0.25 < test.mean() < 0.35
    np.testing.assert_array_equal(test[:100], test[1000:1100])
    perm = rng.permutation(2000)
    np.testing.assert_array_equal(hash_split(x[perm], y[perm], test_fraction=0.3), test[perm])
    assert not hash_split(x, y, test_fraction=0.0).any()
    assert hash_split(x[:3], y[:3], test_fraction=0.999999).sum() == 2


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity_skew"])
def test_partition_dataset_keeps_every_row_once(scheme):
    x = np.arange(1000, dtype=np.float64).reshape(1000, 1)  # the row id is the feature
    data = partition_dataset(x, LABELS, scheme=scheme, num_clients=8, seed=3, alpha=0.5)
    ids = data.client_ids()
    assert ids == [f"client-{i:03d}" for i in range(8)]
    seen = []
    for cid in ids:
        d = data.load(cid)
        assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
        assert d.num_train >= 1
        n = d.num_train + d.num_test
        assert d.num_test == int(np.floor(0.2 * n + 0.5))
        rows = np.concatenate([d.x_train[:, 0], d.x_test[:, 0]]).astype(int)
        np.testing.assert_array_equal(LABELS[rows], np.concatenate([d.y_train, d.y_test]))
        seen.append(rows)
    assert _covers(seen, 1000)
    again = partition_dataset(x, LABELS, scheme=scheme, num_clients=8, seed=3, alpha=0.5)
    np.testing.assert_array_equal(again.load("client-005").x_test, data.load("client-005").x_test)


def test_partition_dataset_by_column():
    x = np.zeros((6, 2, 3))
    y = np.array([0, 1, 0, 1, 1, 0])
    data = partition_dataset(x, y, scheme="by_column", groups=[20, 10, 20, 30, 10, 20])
    assert data.client_ids() == ["10", "20", "30"]
    d = data.load("20")
    assert d.num_train + d.num_test == 3 and d.x_train.shape[1:] == (2, 3)
    assert data.load("30").num_train == 1 and data.load("30").num_test == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"scheme": "iid", "num_clients": 11},
            r"num_clients \(11\) exceeds the number of examples",
        ),
        ({"scheme": "shards", "num_clients": 2}, "unknown scheme 'shards'; accepted: iid"),
        ({"scheme": "iid"}, "scheme 'iid' needs num_clients"),
        ({"scheme": "iid", "num_clients": 0}, "num_clients must be >= 1, got 0"),
        ({"scheme": "by_column"}, "needs groups with one value per example"),
        ({"scheme": "by_column", "groups": [0] * 10, "num_clients": 2}, "groups has 1 values"),
        ({"scheme": "iid", "num_clients": 2, "test_fraction": 1.0}, "test_fraction must be in"),
    ],
)
def test_partition_dataset_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        partition_dataset(np.zeros((10, 2)), np.zeros(10, dtype=int), **kwargs)


def test_partition_dataset_checks_arrays():
    with pytest.raises(ValueError, match="x and y lengths differ: 3 != 2"):
        partition_dataset(np.zeros((3, 1)), np.zeros(2, int), scheme="iid", num_clients=1)
    with pytest.raises(ValueError, match="y must be a 1-D integer label array"):
        partition_dataset(np.zeros((3, 1)), np.zeros(3), scheme="iid", num_clients=1)
