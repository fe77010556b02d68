"""The FedProx synthetic federated classification data: Synthetic(alpha, beta) and Synthetic-IID.

Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in
Heterogeneous Networks", MLSys 2020, section 5.1 and the authors' generators
(github.com/litian96/FedProx, data/synthetic_*). Device k draws
``u_k ~ N(0, alpha^2)``, ``W_k, b_k ~ N(u_k, 1)`` elementwise,
``B_k ~ N(0, beta^2)``, ``v_k ~ N(B_k, 1)`` elementwise, then examples
``x ~ N(v_k, Sigma)`` with ``Sigma = diag(j^-1.2)`` and
``y = argmax(softmax(W_k x + b_k))``; alpha and beta are standard deviations,
as in the reference code.

Note: ``u_k`` shifts every logit of an example by the same amount
(``u_k * (sum(x) + 1)``), and softmax/argmax ignore a common shift, so alpha does
not change any label: model heterogeneity comes from the N(0, 1) part of W_k
and b_k, and beta (through ``v_k``) controls how skewed each device's inputs and
labels are. This is a property of the paper's construction, kept as is.

Deliberate differences from the reference code: one seeded
``np.random.default_rng`` instead of the global NumPy/`random` state; ``x`` is
drawn as ``v_k + sqrt(diag(Sigma)) * z`` (the same law as
``multivariate_normal`` with a diagonal covariance, much faster); features are
float32 and labels int64; the softmax is skipped (it does not change argmax).
"""

from __future__ import annotations

import numpy as np

from fedlake.data.base import ClientDataset, InMemoryClientData

__all__ = [
    "COVARIANCE_DECAY",
    "DIMENSION",
    "MIN_SAMPLES",
    "NUM_CLASSES",
    "NUM_DEVICES",
    "SAMPLES_LOGNORMAL",
    "TRAIN_FRACTION",
    "feature_variances",
    "fedprox_synthetic",
]

NUM_DEVICES = 30
DIMENSION = 60
NUM_CLASSES = 10
MIN_SAMPLES = 50  # samples per device: int(lognormal(4, 2)) + 50
SAMPLES_LOGNORMAL = (4.0, 2.0)  # (mean, sigma) of the underlying normal
COVARIANCE_DECAY = 1.2  # Sigma_jj = j^-1.2, j = 1..dim
TRAIN_FRACTION = 0.9  # per device, after a shuffle: int(0.9 * n) train, the rest test


def feature_variances(dim: int = DIMENSION) -> np.ndarray:
    """The diagonal of Sigma: ``j ** -1.2`` for ``j = 1..dim`` (float64)."""
    return np.arange(1, dim + 1, dtype=np.float64) ** -COVARIANCE_DECAY


def _check(name: str, value: object, low: float, *, integer: bool = False) -> None:
    types = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, types):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not float(value) >= low:  # also rejects NaN
        raise ValueError(f"{name} must be >= {low:g}, got {value}")


def fedprox_synthetic(
    alpha: float,
    beta: float,
    *,
    iid: bool = False,
    num_devices: int = NUM_DEVICES,
    dim: int = DIMENSION,
    num_classes: int = NUM_CLASSES,
    seed: int = 0,
) -> InMemoryClientData:
    """Synthetic(alpha, beta), or Synthetic-IID when ``iid`` (Li et al., MLSys 2020).

    Synthetic-IID shares one ``W, b ~ N(0, 1)`` and draws ``x ~ N(0, Sigma)`` on
    every device (alpha and beta are then unused). Client ids are
    ``device-000``, ``device-001``, ...; each device keeps ``int(0.9 * n)``
    shuffled examples for training and the rest for testing.

    Raises:
        ValueError: alpha or beta < 0, num_devices < 1, dim < 1, num_classes < 2
            or seed < 0.
    """
    _check("alpha", alpha, 0)
    _check("beta", beta, 0)
    _check("num_devices", num_devices, 1, integer=True)
    _check("dim", dim, 1, integer=True)
    _check("num_classes", num_classes, 2, integer=True)
    _check("seed", seed, 0, integer=True)
    rng = np.random.default_rng(seed)
    mean, sigma = SAMPLES_LOGNORMAL
    sizes = rng.lognormal(mean, sigma, num_devices).astype(np.int64) + MIN_SAMPLES
    scale = np.sqrt(feature_variances(dim))
    if iid:
        w_shared = rng.normal(0.0, 1.0, (dim, num_classes))
        b_shared = rng.normal(0.0, 1.0, num_classes)
        means = np.zeros((num_devices, dim))
    else:
        u = rng.normal(0.0, float(alpha), num_devices)  # mean of W_k and b_k
        big_b = rng.normal(0.0, float(beta), num_devices)  # mean of v_k
        means = rng.normal(big_b[:, None], 1.0, (num_devices, dim))  # v_k
    width = max(3, len(str(num_devices - 1)))
    datasets = {}
    for k in range(num_devices):
        if iid:
            w, b = w_shared, b_shared
        else:
            w = rng.normal(u[k], 1.0, (dim, num_classes))
            b = rng.normal(u[k], 1.0, num_classes)
        x = means[k] + scale * rng.normal(size=(int(sizes[k]), dim))
        y = np.argmax(x @ w + b, axis=1).astype(np.int64)
        perm = rng.permutation(len(y))
        n_train = int(TRAIN_FRACTION * len(y))
        train, test = perm[:n_train], perm[n_train:]
        x = x.astype(np.float32)
        datasets[f"device-{k:0{width}d}"] = ClientDataset(x[train], y[train], x[test], y[test])
    return InMemoryClientData(datasets)
