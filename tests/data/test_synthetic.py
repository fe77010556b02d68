"""FedProx synthetic data: the paper's constants, determinism, covariance and heterogeneity."""

import math

import numpy as np
import pytest

from fedlake.data import synthetic
from fedlake.data.synthetic import fedprox_synthetic


def _all(data):
    xs, ys = [], []
    for cid in data.client_ids():
        d = data.load(cid)
        xs += [d.x_train, d.x_test]
        ys += [d.y_train, d.y_test]
    return np.concatenate(xs), np.concatenate(ys)


def _label_hists(data, k=10):
    out = []
    for cid in data.client_ids():
        d = data.load(cid)
        y = np.concatenate([d.y_train, d.y_test])
        out.append(np.bincount(y, minlength=k) / len(y))
    return np.array(out)


def _mean_entropy(hists):
    return float(np.mean([-(h[h > 0] * np.log(h[h > 0])).sum() for h in hists]))


def _mean_tv_to_pooled(hists):
    return float(0.5 * np.abs(hists - hists.mean(0)).sum(1).mean())


def test_paper_constants():
    assert synthetic.NUM_DEVICES == 30
    assert synthetic.DIMENSION == 60
    assert synthetic.NUM_CLASSES == 10
    assert synthetic.MIN_SAMPLES == 50
    assert synthetic.SAMPLES_LOGNORMAL == (4.0, 2.0)
    assert synthetic.COVARIANCE_DECAY == 1.2
    assert synthetic.TRAIN_FRACTION == 0.9
    np.testing.assert_allclose(synthetic.feature_variances(3), [1.0, 2**-1.2, 3**-1.2])


def test_default_shapes_split_and_sizes():
    data = fedprox_synthetic(1.0, 1.0, seed=0)
    ids = data.client_ids()
    assert ids == [f"device-{k:03d}" for k in range(30)]
    expected = np.random.default_rng(0).lognormal(4, 2, 30).astype(int) + 50
    for cid, n in zip(ids, expected, strict=True):
        d = data.load(cid)
        assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
        assert d.x_train.shape == (d.num_train, 60) and d.x_test.shape == (d.num_test, 60)
        assert d.num_train + d.num_test == n >= 50
        assert d.num_train == int(0.9 * n)
        assert set(np.concatenate([d.y_train, d.y_test])) <= set(range(10))


def test_deterministic_in_seed():
    a, b = fedprox_synthetic(0.5, 0.5, seed=7), fedprox_synthetic(0.5, 0.5, seed=7)
    c = fedprox_synthetic(0.5, 0.5, seed=8)
    for cid in a.client_ids():
        np.testing.assert_array_equal(a.load(cid).x_train, b.load(cid).x_train)
        np.testing.assert_array_equal(a.load(cid).y_test, b.load(cid).y_test)
    assert not np.array_equal(a.load("device-000").x_train[:5], c.load("device-000").x_train[:5])


def test_iid_covariance_decays_like_j_pow_minus_1_2():
    x, _ = _all(fedprox_synthetic(0, 0, iid=True, seed=1))
    assert len(x) > 3000
    np.testing.assert_allclose(x.mean(0), 0, atol=0.08)
    var = x.var(0)
    slope = np.polyfit(np.log(np.arange(1, 61)), np.log(var), 1)[0]
    assert slope == pytest.approx(-1.2, abs=0.08)
    np.testing.assert_allclose(var[:5], synthetic.feature_variances(5), rtol=0.15)


def test_iid_devices_share_one_label_distribution():
    iid = _mean_tv_to_pooled(_label_hists(fedprox_synthetic(0, 0, iid=True, seed=2)))
    non = _mean_tv_to_pooled(_label_hists(fedprox_synthetic(0, 0, seed=2)))
    assert iid < 0.2 < 0.5 < non


def test_heterogeneity_grows_with_beta():
    def entropy(beta):
        return np.mean(
            [_mean_entropy(_label_hists(fedprox_synthetic(0, beta, seed=s))) for s in range(3)]
        )

    iid = _mean_entropy(_label_hists(fedprox_synthetic(0, 0, iid=True, seed=0)))
    assert iid > 1.5 > entropy(0.0) > entropy(3.0) + 0.1


def test_alpha_only_shifts_all_logits_so_labels_ignore_it():
    # u_k adds u_k * (sum(x) + 1) to every logit: argmax, and so every label, is unchanged
    a, b = fedprox_synthetic(0.0, 1.0, seed=3), fedprox_synthetic(2.0, 1.0, seed=3)
    for cid in a.client_ids():
        np.testing.assert_array_equal(a.load(cid).y_train, b.load(cid).y_train)
        np.testing.assert_array_equal(a.load(cid).x_test, b.load(cid).x_test)


def test_custom_sizes():
    data = fedprox_synthetic(1, 1, num_devices=4, dim=5, num_classes=3, seed=0)
    assert data.client_ids() == ["device-000", "device-001", "device-002", "device-003"]
    d = data.load("device-002")
    assert d.x_train.shape[1:] == (5,) and d.y_train.max() < 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -1}, "alpha must be >= 0, got -1"),
        ({"beta": math.nan}, "beta must be >= 0, got nan"),
        ({"num_devices": 0}, "num_devices must be >= 1, got 0"),
        ({"dim": 0}, "dim must be >= 1, got 0"),
        ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
        ({"seed": -3}, "seed must be >= 0, got -3"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = {"alpha": 1.0, "beta": 1.0, **kwargs}
    alpha, beta = args.pop("alpha"), args.pop("beta")
    with pytest.raises(ValueError, match=message):
        fedprox_synthetic(alpha, beta, **args)


def test_wrong_types():
    with pytest.raises(TypeError, match="num_devices must be an integer"):
        fedprox_synthetic(1, 1, num_devices=2.5)
    with pytest.raises(TypeError, match="alpha must be a number"):
        fedprox_synthetic("1", 1)
