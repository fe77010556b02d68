"""The procedural wearable population: shapes, determinism, scale, plausibility, learnability."""

import pickle
import tracemalloc

import numpy as np
import pytest

from fedlake.data.activity import (
    ACTIVITIES,
    CHANNELS,
    FEATURE_NAMES,
    MAX_WINDOWS,
    MIN_WINDOWS,
    ActivityPopulation,
    window_features,
)
from fedlake.data.base import ClientData


def _equal(a, b):
    return all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in ("x_train", "y_train", "x_test")
    )


def _pooled(pop, ids):
    xs, ys = [], []
    for cid in ids:
        d = pop.load(cid)
        xs += [d.x_train, d.x_test]
        ys += [d.y_train, d.y_test]
    return np.concatenate(xs), np.concatenate(ys)


def test_shapes_dtypes_and_split():
    pop = ActivityPopulation(5, seed=0)
    assert isinstance(pop, ClientData)
    assert ACTIVITIES == ("sitting", "walking", "running", "cycling", "sleeping")
    assert CHANNELS == ("acc_x", "acc_y", "acc_z", "heart_rate")
    for cid in pop.client_ids():
        d = pop.load(cid)
        n = d.num_train + d.num_test
        assert MIN_WINDOWS <= n <= MAX_WINDOWS
        assert d.num_test == round(0.2 * n) or abs(d.num_test - 0.2 * n) <= 0.5
        assert d.x_train.shape == (d.num_train, 4, 128) and d.x_test.shape == (d.num_test, 4, 128)
        assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
        assert d.y_train.min() >= 0 and d.y_train.max() < len(ACTIVITIES)
        assert np.isfinite(d.x_train).all()


def test_deterministic_per_seed_and_user_regardless_of_population_size():
    small, big = ActivityPopulation(10, seed=3), ActivityPopulation(1_000_000, seed=3)
    assert _equal(small.load("user-0000007"), big.load("user-0000007"))
    assert _equal(small.load("user-0000007"), ActivityPopulation(10, seed=3).load("user-0000007"))
    assert not _equal(small.load("user-0000007"), small.load("user-0000006"))
    other = ActivityPopulation(10, seed=4).load("user-0000007")
    assert not np.array_equal(other.x_train[:1], small.load("user-0000007").x_train[:1])


def test_million_users_cost_nothing():
    tracemalloc.start()
    try:
        pop = ActivityPopulation(1_000_000, seed=0)
        ids = pop.client_ids()
        assert len(ids) == 1_000_000 and ids[-1] == "user-0999999" and ids[0] == "user-0000000"
        assert "user-0500000" in ids and ids.index("user-0500000") == 500_000
        d = pop.load("user-0999999")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A million id strings alone would take ~60 MB; one user's windows take well under 2 MB.
    assert peak < 4_000_000, f"peak {peak:,} bytes"
    assert len(pickle.dumps(pop)) < 500
    assert d.num_train >= 1


def test_lazy_ids_behave_like_a_sequence():
    ids = ActivityPopulation(12, seed=0).client_ids()
    assert ids[2:5] == ["user-0000002", "user-0000003", "user-0000004"]
    assert ids[-1] == "user-0000011" and list(ids)[11] == ids[11]
    assert "user-0000011" in ids and "user-0000012" not in ids and "user-11" not in ids
    assert ids.index("user-0000004") == 4
    with pytest.raises(IndexError):
        ids[12]
    with pytest.raises(ValueError, match="not in the population"):
        ids.index("user-0000012")


@pytest.mark.parametrize("bad", ["user-0000005", "user-5", "nobody", "user-000000x"])
def test_unknown_user(bad):
    with pytest.raises(KeyError, match="unknown client id"):
        ActivityPopulation(5).load(bad)


def test_label_mix_and_size_differ_between_users():
    pop = ActivityPopulation(20, seed=0)
    hists, sizes = [], []
    for cid in pop.client_ids():
        d = pop.load(cid)
        y = np.concatenate([d.y_train, d.y_test])
        hists.append(np.bincount(y, minlength=5) / len(y))
        sizes.append(len(y))
    hists = np.array(hists)
    tv = 0.5 * np.abs(hists[:, None] - hists[None]).sum(-1)
    assert tv[np.triu_indices(20, 1)].mean() > 0.3
    assert hists.max(axis=1).max() > 0.5  # some users are dominated by one activity
    assert (hists.sum(0) > 0).all()  # every activity occurs in the population
    assert len(set(sizes)) > 10


def test_signals_are_physically_plausible():
    x, y = _pooled(ActivityPopulation(40, seed=1), ActivityPopulation(40).client_ids())
    acc, bpm = x[:, :3], x[:, 3] * 60
    mag = np.linalg.norm(acc, axis=1)
    still = np.isin(y, [0, 4])
    assert np.median(mag[still].mean(-1)) == pytest.approx(1.0, abs=0.05)  # gravity, in g
    hr = [np.median(bpm[y == a]) for a in range(5)]
    sitting, walking, running, cycling, sleeping = hr
    assert 40 < sleeping < sitting < walking < cycling < running < 200
    motion = [np.median(acc[y == a].std(-1).max(-1)) for a in range(5)]
    assert motion[4] < motion[0] < motion[3] < motion[1] < motion[2]
    # gravity along the device's first (vertical) axis when upright, not when lying down
    vertical = acc[:, 0].mean(-1)
    assert np.median(vertical[y == 1]) > 0.8 and abs(np.median(vertical[y == 4])) < 0.4


def test_features_match_raw_windows():
    raw = ActivityPopulation(3, seed=2).load("user-0000001")
    feat = ActivityPopulation(3, seed=2, features=True).load("user-0000001")
    assert feat.x_train.shape == (raw.num_train, len(FEATURE_NAMES)) == (raw.num_train, 40)
    assert feat.x_train.dtype == np.float32 and np.isfinite(feat.x_train).all()
    np.testing.assert_array_equal(feat.y_test, raw.y_test)
    np.testing.assert_allclose(feat.x_train, window_features(raw.x_train), rtol=1e-6)
    assert window_features(np.zeros((0, 4, 128))).shape == (0, 40)
    with pytest.raises(ValueError, match="windows must have shape"):
        window_features(np.zeros((2, 3, 128)))


def test_dominant_frequency_finds_the_gait():
    t = np.arange(128) / 25.0
    x = np.zeros((1, 4, 128))
    x[0, 0] = 1 + 0.5 * np.sin(2 * np.pi * 2.0 * t)
    f = dict(zip(FEATURE_NAMES, window_features(x)[0], strict=True))
    assert f["acc_x_dom_freq"] == pytest.approx(2.0, abs=25 / 128)
    assert f["acc_x_mean"] == pytest.approx(1.0, abs=0.01)
    assert f["acc_y_std"] == 0


def test_picklable():
    pop = ActivityPopulation(50, seed=5, features=True)
    back = pickle.loads(pickle.dumps(pop))
    assert _equal(back.load("user-0000042"), pop.load("user-0000042"))


def test_logistic_regression_on_features_beats_chance_on_unseen_users():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pop = ActivityPopulation(30, seed=0, features=True)
    ids = pop.client_ids()
    x_tr, y_tr = _pooled(pop, ids[:20])
    x_te, y_te = _pooled(pop, ids[20:])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_tr, y_tr)
    assert clf.score(x_te, y_te) > 0.6


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_users": 0}, ValueError, "num_users must be >= 1, got 0"),
        ({"num_users": 2.0}, TypeError, "num_users must be an integer"),
        ({"test_fraction": 1.0}, ValueError, r"test_fraction must be in \(0, 1\), got 1.0"),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer, got -1"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    args = {"num_users": 3, **kwargs}
    with pytest.raises(error, match=message):
        ActivityPopulation(args.pop("num_users"), **args)
