"""Multinomial logistic regression in vectorised numpy: the dependency-free reference trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from fedlake.client import logreg_kernel as kernel
from fedlake.core.params import FLOAT, ParamSpec, TensorSpec, as_vector
from fedlake.core.task import local_steps
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Affine, Transform

__all__ = [
    "LogRegTrainer",
    "check_labels",
    "log_softmax",
    "loss_and_grad",
    "one_hot",
    "total_steps",
]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for large logits (shifts by the row maximum)."""
    z = logits - logits.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Float32 one-hot rows (n, num_classes) of integer labels ``y``."""
    out = np.zeros((len(y), num_classes), dtype=FLOAT)
    out[np.arange(len(y)), y] = 1.0
    return out


def loss_and_grad(
    params: np.ndarray, x: np.ndarray, targets: np.ndarray, *, l2: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy plus ``l2 / 2 * ||weight||^2`` and its gradient w.r.t. the flat params.

    Args:
        params: flat ``[weight (c, f) row-major, bias (c,)]``.
        x: features (n, f); the computation keeps the dtype of ``params`` and ``x``.
        targets: (n, c) rows summing to one, e.g. :func:`one_hot` labels.
        l2: strength of the penalty on the weight matrix (not the bias).

    Returns:
        ``(loss, grad)`` with ``grad`` a new array shaped like ``params``.
    """
    n, f = x.shape
    c = targets.shape[1]
    k = c * f
    logits = x @ params[:k].reshape(c, f).T
    logits += params[k:]
    logits -= logits.max(axis=1, keepdims=True)  # log-sum-exp shift: exp() <= 1
    probs = np.exp(logits)
    norm = probs.sum(axis=1, keepdims=True)
    loss = (float(np.log(norm).sum()) - float(np.vdot(logits, targets))) / n
    probs /= norm
    probs -= targets  # d loss / d logits = n * (softmax - targets)
    grad = np.empty_like(params)
    np.matmul(probs.T, x, out=grad[:k].reshape(c, f))
    probs.sum(axis=0, out=grad[k:])
    grad /= n
    if l2:
        w = params[:k]
        loss += 0.5 * l2 * float(w @ w)
        grad[:k] += w.dtype.type(l2) * w
    return loss, grad


def total_steps(n: int, config: LocalConfig) -> int:
    """Minibatch steps of local SGD on ``n`` rows: every epoch's batches, capped by max_steps."""
    steps = local_steps(n, config.batch_size, config.epochs)
    return steps if config.max_steps is None else min(steps, int(config.max_steps))


def check_labels(y: np.ndarray, *, n: int, num_classes: int) -> None:
    """Raise ValueError unless ``y`` holds ``n`` integer labels in ``[0, num_classes)``."""
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"y must be shaped ({n},) to match x, got {y.shape}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )


def _read_only(v: np.ndarray) -> np.ndarray:
    view = v.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class LogRegTrainer:
    """Multinomial logistic regression trained with minibatch SGD, all in float32 numpy.

    Params are ``weight`` (num_classes, num_features) and ``bias`` (num_classes,).
    Inputs with more than two dims are flattened. ``init_params`` returns zeros
    (the objective is convex, so the seed is accepted but not needed). The
    training objective, and so ``FitResult.loss``, includes the ``l2 / 2 *
    ||weight||^2`` penalty; ``evaluate`` reports the plain cross-entropy.
    """

    num_features: int
    num_classes: int
    l2: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        if self.num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {self.num_features}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")

    @property
    def spec(self) -> ParamSpec:
        """``weight`` (num_classes, num_features) then ``bias`` (num_classes,)."""
        return ParamSpec(
            (
                TensorSpec("weight", (self.num_classes, self.num_features)),
                TensorSpec("bias", (self.num_classes,)),
            )
        )

    def init_params(self, seed: int) -> np.ndarray:
        """All-zero float32 parameters (the same for every seed)."""
        return np.zeros(self.num_classes * (self.num_features + 1), dtype=FLOAT)

    def fit(
        self,
        params: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        *,
        config: LocalConfig,
        rng: np.random.Generator,
        grad_transform: Transform | None = None,
    ) -> FitResult:
        """Minibatch SGD for ``config.epochs`` epochs, reshuffled each epoch with ``rng``.

        With ``config.max_steps`` set, stops after that many steps (even mid-epoch); a
        permutation is drawn only for the epochs begun.
        """
        if config.dp is not None:
            raise ValueError(
                "DP-SGD needs a torch model (mlp, cnn1d); logreg has no per-sample gradient "
                f"path (got dp={config.dp}): use central or local DP instead"
            )
        affine = Affine() if grad_transform is None else grad_transform.affine
        if affine is not None and kernel.AVAILABLE:  # compiled: same steps, ~10x faster
            return kernel.run(self.compiled_job(params, x, y, config, rng, affine=affine))
        theta = self._check_params(params)
        xs, y, n = self._check_data(x, y)
        lr, bsz, l2 = FLOAT(config.lr), int(config.batch_size), self.l2
        limit = total_steps(n, config)
        targets = one_hot(y, self.num_classes)
        state: Any = None
        if grad_transform is not None:
            state = grad_transform.init(_read_only(theta))
        total, steps = 0.0, 0
        while steps < limit:  # one epoch per pass
            perm = rng.permutation(n)
            xp, tp = xs[perm], targets[perm]
            for start in range(0, min(n, (limit - steps) * bsz), bsz):
                stop = start + bsz
                loss, g = loss_and_grad(theta, xp[start:stop], tp[start:stop], l2=l2)
                if grad_transform is not None:
                    g, state = grad_transform.update(g, state, params=theta, rng=rng)
                    g = _check_grad(g, theta.shape)
                theta = theta - lr * g  # a new array: transforms may keep references
                total += loss
                steps += 1
        return FitResult(params=theta, loss=total / steps, num_examples=n, steps=steps)

    def compiled_job(
        self,
        params: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        config: LocalConfig,
        rng: np.random.Generator,
        *,
        affine: Affine | None = None,
    ) -> kernel.Job:
        """Checked inputs of the compiled loop, with this client's minibatch order drawn from
        ``rng`` exactly as :meth:`fit` draws it (one permutation per epoch begun), and its
        affine local step (``affine.offset`` of this client alone: shape (d,))."""
        if config.dp is not None:
            raise ValueError(f"DP-SGD needs a torch model, got dp={config.dp}")
        theta = np.ascontiguousarray(self._check_params(params), dtype=FLOAT)
        xs, labels, n = self._check_data(x, y)
        bsz = int(config.batch_size)
        limit = total_steps(n, config)
        per_epoch = -(-n // bsz)
        order = np.concatenate([rng.permutation(n) for _ in range(-(-limit // per_epoch))])
        step = affine or Affine()
        for name, vec in (("anchor", step.anchor), ("offset", step.offset)):
            if vec is not None and np.shape(vec) != theta.shape:
                raise ValueError(
                    f"the local step's {name} is shaped {np.shape(vec)}, the params {theta.shape}"
                )
        return kernel.Job(
            theta,
            xs,
            labels.astype(np.int64, copy=False),
            order,
            bsz,
            float(FLOAT(config.lr)),
            float(self.l2),
            limit,
            self.num_classes,
            float(step.mu),
            step.anchor,
            step.offset,
        )

    def predict(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, num_classes), float32."""
        return np.exp(self._log_probs(params, x))

    def evaluate(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Mean cross-entropy (without the l2 penalty), accuracy and example count."""
        logp = self._log_probs(params, x)
        y = np.asarray(y)
        check_labels(y, n=logp.shape[0], num_classes=self.num_classes)
        if logp.shape[0] == 0:
            raise ValueError("x must hold at least one example, got 0")
        rows = np.arange(len(y))
        return {
            "loss": float(-np.mean(logp[rows, y], dtype=np.float64)),
            "accuracy": float(np.mean(logp.argmax(axis=1) == y)),
            "examples": float(len(y)),
        }

    def _log_probs(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        theta = self._check_params(params)
        xs = self._flat_features(np.asarray(x))
        k = self.num_classes * self.num_features
        logits = xs @ theta[:k].reshape(self.num_classes, self.num_features).T + theta[k:]
        return log_softmax(logits)

    def _check_params(self, params: np.ndarray) -> np.ndarray:
        theta = as_vector(params)
        size = self.num_classes * (self.num_features + 1)
        if theta.shape != (size,):
            raise ValueError(f"params must have length {size}, got {theta.shape[0]}")
        return theta

    def _flat_features(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2 or prod(x.shape[1:]) != self.num_features:
            raise ValueError(
                f"x must be shaped (n, ...) with {self.num_features} features per example, "
                f"got shape {x.shape}"
            )
        return np.ascontiguousarray(x.reshape(x.shape[0], self.num_features), dtype=FLOAT)

    def _check_data(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        xs = self._flat_features(np.asarray(x))
        y = np.asarray(y)
        check_labels(y, n=xs.shape[0], num_classes=self.num_classes)
        if xs.shape[0] == 0:
            raise ValueError("x must hold at least one example, got 0")
        return xs, y.astype(np.intp, copy=False), xs.shape[0]


def _check_grad(g: Any, shape: tuple[int, ...]) -> np.ndarray:
    g = np.asarray(g, dtype=FLOAT)
    if g.shape != shape:
        raise ValueError(f"grad_transform must return a vector shaped {shape}, got {g.shape}")
    return g
