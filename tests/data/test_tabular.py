"""scikit-learn's shipped datasets: loaders and federated splits."""

import numpy as np
import pytest

from fedlake.data.tabular import load_breast_cancer_xy, load_digits_xy, sklearn_federated


@pytest.mark.parametrize(
    ("loader", "shape", "classes"),
    [(load_digits_xy, (1797, 64), 10), (load_breast_cancer_xy, (569, 30), 2)],
)
def test_loaders_standardise(loader, shape, classes):
    x, y = loader()
    assert x.shape == shape and x.dtype == np.float32
    assert y.shape == shape[:1] and y.dtype == np.int64
    assert sorted(set(y.tolist())) == list(range(classes))
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    std = x.std(0)
    assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))  # digits has blank border pixels


def test_digits_federated_dirichlet():
    data = sklearn_federated("digits", num_clients=10, alpha=0.5, seed=0)
    ids = data.client_ids()
    assert len(ids) == 10
    total = sum(data.load(c).num_train + data.load(c).num_test for c in ids)
    assert total == 1797
    again = sklearn_federated("digits", num_clients=10, alpha=0.5, seed=0)
    np.testing.assert_array_equal(again.load(ids[3]).x_train, data.load(ids[3]).x_train)
    d = data.load(ids[0])
    assert d.x_train.shape[1:] == (64,) and d.num_test > 0


def test_breast_cancer_iid_and_quantity_skew():
    iid = sklearn_federated("breast_cancer", num_clients=5, scheme="iid", test_fraction=0.3)
    sizes = [iid.load(c).num_train + iid.load(c).num_test for c in iid.client_ids()]
    assert sum(sizes) == 569 and max(sizes) - min(sizes) <= 1
    skew = sklearn_federated("breast_cancer", num_clients=5, scheme="quantity_skew", alpha=0.3)
    sizes = [skew.load(c).num_train + skew.load(c).num_test for c in skew.client_ids()]
    assert sum(sizes) == 569 and max(sizes) > 2 * min(sizes)


def test_errors():
    with pytest.raises(
        ValueError, match="unknown dataset 'mnist'; accepted: breast_cancer, digits"
    ):
        sklearn_federated("mnist", num_clients=2)
    with pytest.raises(ValueError, match="needs a group column"):
        sklearn_federated("digits", num_clients=2, scheme="by_column")
    with pytest.raises(ValueError, match=r"num_clients \(600\) exceeds the number of examples"):
        sklearn_federated("breast_cancer", num_clients=600)
