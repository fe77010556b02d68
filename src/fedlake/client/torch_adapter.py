"""Train any ``torch.nn.Module`` on flat float32 parameter vectors (the Trainer protocol)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from fedlake.client.logreg import check_labels, total_steps
from fedlake.client.torch_common import _Entries, _read, torch_threads
from fedlake.core.params import FLOAT, ParamSpec, TensorSpec, as_vector
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform

__all__ = ["TorchTrainer", "get_flat_params", "module_spec", "set_flat_params", "torch_threads"]

LOSSES = ("cross_entropy", "nll")
OPTIMIZERS = ("sgd", "adam")
EVAL_BATCH = 1024
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16"}


def module_spec(module: nn.Module) -> ParamSpec:
    """Spec of every floating tensor (parameters and buffers) in ``state_dict`` order."""
    tensors = []
    for name, t in module.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            continue  # e.g. BatchNorm's num_batches_tracked stays in the module
        if t.dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        tensors.append(TensorSpec(name, tuple(t.shape), _DTYPES[t.dtype]))
    return ParamSpec(tuple(tensors))


def get_flat_params(module: nn.Module, spec: ParamSpec) -> np.ndarray:
    """Copy the module's tensors named in ``spec`` into one new float32 vector."""
    return _read(_bind(module, spec), spec.size)


def set_flat_params(module: nn.Module, spec: ParamSpec, vector: np.ndarray) -> None:
    """Copy a flat vector into the module's tensors named in ``spec`` (in place)."""
    _write(_bind(module, spec), _checked(vector, spec.size))


def _bind(module: nn.Module, spec: ParamSpec) -> _Entries:
    state = module.state_dict(keep_vars=True)
    return [(state[name], sl) for name, sl in spec.slices().items()]


def _checked(vector: np.ndarray, size: int) -> np.ndarray:
    vec = as_vector(vector)
    if vec.shape != (size,):
        raise ValueError(f"params must have length {size}, got {vec.shape[0]}")
    return vec


def _tensor(a: np.ndarray) -> torch.Tensor:
    """Share memory with ``a`` where torch can; copy read-only arrays (avoids torch's warning)."""
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _write(entries: _Entries, vector: np.ndarray, *, grads: bool = False) -> None:
    """Copy slices of ``vector`` into the tensors (or into their gradients)."""
    flat = _tensor(vector)
    with torch.no_grad():
        for t, sl in entries:
            src = flat[sl].view(t.shape)
            if not grads:
                t.copy_(src)
            elif t.grad is None:
                t.grad = src.to(t.dtype, copy=True)
            else:
                t.grad.copy_(src)


@dataclass
class _Bound:
    """A built module, its spec entries, and the entries of its trainable parameters."""

    module: nn.Module
    entries: _Entries
    trainable: _Entries


class TorchTrainer:
    """Trainer over a torch module built by ``model_fn``; picklable and deterministic in ``rng``.

    The module is built lazily on first use and cached on this object, but not
    pickled: ``model_fn`` must be a picklable zero-argument callable (e.g. a
    ``functools.partial`` of a module-level factory). Params are every floating
    tensor of ``state_dict`` (buffers included, so running statistics travel);
    buffers get zero gradients. One trainer must not be used from two threads
    at once. Optimiser state starts fresh on every ``fit``.

    Training and evaluation run on ``threads`` intra-op threads (default 1):
    float results depend on the thread count, so pinning it makes a client's
    update the same inline, in a worker process or on another host with the
    same build, and for the small models of FL clients one thread is also the
    fastest (no spin-waiting when cores are shared).
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        loss: str = "cross_entropy",
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        threads: int = 1,
    ) -> None:
        if not callable(model_fn):
            raise TypeError(f"model_fn must be a zero-argument callable, got {model_fn!r}")
        shape = tuple(input_shape)
        if not shape or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
            raise ValueError(f"input_shape must be positive integers, got {input_shape!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if momentum and optimizer != "sgd":
            raise ValueError(f"momentum applies only to optimizer='sgd', got {optimizer!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.model_fn = model_fn
        self.input_shape = tuple(int(s) for s in shape)
        self.num_classes = int(num_classes)
        self.loss = loss
        self.optimizer = optimizer
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.threads = int(threads)
        self._spec: ParamSpec | None = None
        self._bound: _Bound | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bound"] = None  # modules are rebuilt from model_fn on the other side
        return state

    def __repr__(self) -> str:
        return (
            f"TorchTrainer({self.model_fn!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, loss={self.loss!r}, optimizer={self.optimizer!r}, "
            f"momentum={self.momentum}, weight_decay={self.weight_decay}, threads={self.threads})"
        )

    @property
    def spec(self) -> ParamSpec:
        """Every floating tensor of the module's ``state_dict``, in order."""
        if self._spec is None:
            self._get_bound()
        assert self._spec is not None
        return self._spec

    def init_params(self, seed: int) -> np.ndarray:
        """The module's own initialisation seeded with ``seed`` (torch's global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            module = self._new_module()
        if module_spec(module) != self.spec:
            raise ValueError("model_fn built modules with different parameter layouts")
        return get_flat_params(module, self.spec)

    def build_module(self, params: np.ndarray) -> nn.Module:
        """A fresh module (eval mode) holding ``params``, e.g. for export or serving."""
        with torch.random.fork_rng(devices=[]):
            module = self._new_module()
        set_flat_params(module, self.spec, params)
        return module.eval()

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
        """Minibatch training reshuffled each epoch with ``rng``; dropout is seeded from ``rng``.

        ``config.max_steps`` stops training after that many steps (even mid-epoch); a
        permutation is drawn only for the epochs begun. With ``config.dp`` set, runs
        DP-SGD instead (:func:`fedlake.client.dpsgd.dpsgd_fit`).
        """
        if config.dp is not None:  # imported here: only DP-SGD needs Opacus
            from fedlake.client.dpsgd import dpsgd_fit

            return dpsgd_fit(
                self, params, x, y, config=config, rng=rng, grad_transform=grad_transform
            )
        bound = self._get_bound()
        start = self._load(bound, params)
        xt, yt = self._data(x, y)
        n, bsz = xt.shape[0], int(config.batch_size)
        opt = self._make_optimizer([t for t, _ in bound.trainable], config.lr)
        state: Any = None
        if grad_transform is not None:
            start.flags.writeable = False
            state = grad_transform.init(start)
        total, steps = 0.0, 0
        module = bound.module
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.default_generator.manual_seed(int(rng.integers(2**63 - 1)))
            module.train()
            limit = total_steps(n, config)
            while steps < limit:  # one epoch per pass
                perm = torch.from_numpy(rng.permutation(n))
                xp, yp = xt[perm], yt[perm]
                for s in range(0, min(n, (limit - steps) * bsz), bsz):
                    opt.zero_grad(set_to_none=False)
                    loss = self._loss_fn(module(xp[s : s + bsz]), yp[s : s + bsz])
                    loss.backward()
                    if grad_transform is not None:
                        state = self._transform_grads(bound, grad_transform, state, rng)
                    opt.step()
                    total += float(loss.detach())
                    steps += 1
        module.eval()
        params_out = _read(bound.entries, self.spec.size)
        return FitResult(params=params_out, loss=total / steps, num_examples=n, steps=steps)

    def predict(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, num_classes), float32, computed in batches."""
        bound = self._get_bound()
        self._load(bound, params)
        xt = self._features(x)
        outs = []
        with torch_threads(self.threads), torch.no_grad():
            bound.module.eval()
            for s in range(0, xt.shape[0], EVAL_BATCH):
                out = bound.module(xt[s : s + EVAL_BATCH])
                outs.append(out.exp() if self.loss == "nll" else out.softmax(dim=1))
        if not outs:
            return np.empty((0, self.num_classes), dtype=FLOAT)
        return torch.cat(outs).numpy().astype(FLOAT, copy=False)

    def evaluate(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Mean loss, accuracy and example count, computed in batches without gradients."""
        bound = self._get_bound()
        self._load(bound, params)
        xt, yt = self._data(x, y)
        loss_sum, correct = 0.0, 0
        with torch_threads(self.threads), torch.no_grad():
            bound.module.eval()
            for s in range(0, xt.shape[0], EVAL_BATCH):
                out, yb = bound.module(xt[s : s + EVAL_BATCH]), yt[s : s + EVAL_BATCH]
                loss_sum += float(self._loss_fn(out, yb, reduction="sum"))
                correct += int((out.argmax(dim=1) == yb).sum())
        n = xt.shape[0]
        return {"loss": loss_sum / n, "accuracy": correct / n, "examples": float(n)}

    # internals ------------------------------------------------------------

    def _new_module(self) -> nn.Module:
        module = self.model_fn()
        if not isinstance(module, nn.Module):
            raise TypeError(f"model_fn must return a torch.nn.Module, got {type(module).__name__}")
        return module

    def _get_bound(self) -> _Bound:
        if self._bound is None:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(0)
                module = self._new_module()
            spec = module_spec(module)
            if self._spec is not None and spec != self._spec:
                raise ValueError("model_fn built a module with a different parameter layout")
            with torch.no_grad():
                out = module.eval()(torch.zeros((1, *self.input_shape)))
            if tuple(out.shape) != (1, self.num_classes):
                raise ValueError(
                    f"model_fn's module maps input (1, *{self.input_shape}) to shape "
                    f"{tuple(out.shape)}, expected (1, {self.num_classes})"
                )
            entries = _bind(module, spec)
            params = {id(p) for p in module.parameters() if p.requires_grad}
            trainable = [(t, sl) for t, sl in entries if id(t) in params]
            self._spec, self._bound = spec, _Bound(module, entries, trainable)
        return self._bound

    def _load(self, bound: _Bound, params: np.ndarray) -> np.ndarray:
        vec = _checked(params, self.spec.size)
        _write(bound.entries, vec)
        return vec.view()

    def _transform_grads(
        self, bound: _Bound, tx: Transform, state: Any, rng: np.random.Generator
    ) -> Any:
        size = self.spec.size
        grad = _read(bound.trainable, size, grads=True)  # buffers get zero gradients
        new, state = tx.update(grad, state, params=_read(bound.entries, size), rng=rng)
        new = np.asarray(new, dtype=FLOAT)
        if new.shape != grad.shape:
            raise ValueError(f"grad_transform must return shape {grad.shape}, got {new.shape}")
        _write(bound.trainable, new, grads=True)
        return state

    def _make_optimizer(self, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        params = list({id(p): p for p in params}.values())  # tied weights appear once
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def _loss_fn(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.loss == "nll":
            return F.nll_loss(out, y, reduction=reduction)
        return F.cross_entropy(out, y, reduction=reduction)

    def _features(self, x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x)
        if x.ndim < 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"x must be shaped (n, *{self.input_shape}), got {x.shape}")
        return _tensor(np.ascontiguousarray(x, dtype=FLOAT))

    def _data(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xt = self._features(x)
        y = np.asarray(y)
        check_labels(y, n=xt.shape[0], num_classes=self.num_classes)
        if xt.shape[0] == 0:
            raise ValueError("x must hold at least one example, got 0")
        return xt, _tensor(np.ascontiguousarray(y, dtype=np.int64))
