"""Compiled local SGD for multinomial logistic regression (numba), the hot loop of logreg clients.

Why our own kernel: an FL client's minibatches are tiny (FedProx's batch of 10 rows,
60 features, 10 classes), so numpy spends almost all of each step in per-call overhead
(about 30 us for 12k flops). A compiled loop over the same maths takes a few us per
step, and every simulated client step goes through it. It computes exactly what
:func:`fedlake.client.logreg.loss_and_grad` and the SGD update compute (same minibatches,
same order), in float32 with float64 loss sums; results agree to float tolerance.
Without numba (an optional speed-up), :data:`AVAILABLE` is False and callers use numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from fedlake.core.recycle import TRAINING
from fedlake.core.trainer import FitResult

try:  # numba is a declared dependency, but a platform without a wheel still works
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba cannot be installed
    AVAILABLE = False

    def njit(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        """Stand-in decorator: the function stays plain Python (callers check AVAILABLE)."""
        return lambda fn: fn


def _sgd_steps(
    out: np.ndarray,
    grad: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    batch: int,
    lr: float,
    l2: float,
    steps: int,
    num_classes: int,
    mu: float,
    anchor: np.ndarray,
    offset: np.ndarray,
    use_offset: bool,
) -> float:
    """``steps`` SGD steps on rows ``order`` (epochs' permutations concatenated), training
    ``out`` in place with ``grad`` (as long) as scratch; returns the sum of the minibatch
    losses.

    Every gradient becomes ``g + mu * (w - anchor) + offset`` (``anchor`` read only when
    ``mu != 0``, ``offset`` only when ``use_offset``): FedProx's proximal term and
    SCAFFOLD's correction. The buffers come from numpy, not from the compiled code:
    numpy asks the kernel for huge pages (a 100 MB allocation faults in ~10 ms, not ~60).
    """
    n, f = x.shape
    c = num_classes
    k = c * f
    logits = np.empty(c, dtype=np.float32)
    per_epoch = (n + batch - 1) // batch
    lr32 = np.float32(lr)
    l2_32 = np.float32(l2)
    mu32 = np.float32(mu)
    total = 0.0
    for s in range(steps):
        epoch = s // per_epoch
        start = (s - epoch * per_epoch) * batch
        stop = min(start + batch, n)
        rows = stop - start
        grad[:] = 0.0
        loss = 0.0
        for r in range(start, stop):
            i = order[epoch * n + r]
            peak = np.float32(0.0)
            for j in range(c):
                z = out[k + j]
                for q in range(f):
                    z += out[j * f + q] * x[i, q]
                logits[j] = z
                if j == 0 or z > peak:
                    peak = z
            shifted_y = logits[y[i]] - peak  # kept before exp: it may underflow to 0
            norm = np.float32(0.0)
            for j in range(c):
                logits[j] = np.exp(logits[j] - peak)
                norm += logits[j]
            loss += np.log(norm) - shifted_y
            for j in range(c):
                p = logits[j] / norm
                if j == y[i]:
                    p -= np.float32(1.0)
                grad[k + j] += p
                for q in range(f):
                    grad[j * f + q] += p * x[i, q]
        scale = np.float32(1.0 / rows)
        # one operation per loop, as recorded runs were computed: a fused loop lets the
        # compiler contract and reassociate differently (fastmath), and changes the bits
        for j in range(out.size):
            grad[j] *= scale
        if l2 != 0.0:
            sq = 0.0
            for j in range(k):
                sq += out[j] * out[j]
                grad[j] += l2_32 * out[j]
            loss += 0.5 * l2 * sq * rows
        if mu != 0.0:
            for j in range(out.size):
                grad[j] += mu32 * (out[j] - anchor[j])
        if use_offset:
            for j in range(out.size):
                grad[j] += offset[j]
        for j in range(out.size):
            out[j] -= lr32 * grad[j]
        total += loss / rows
    return total


# reassociation lets the compiler vectorise the sums; no nnan/ninf: NaN and Inf stay honest
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
try:  # the machine code is cached beside the sources (or in NUMBA_CACHE_DIR)
    sgd_steps = njit(cache=True, nogil=True, fastmath=FASTMATH)(_sgd_steps)
except RuntimeError:  # no writable cache location (read-only install): compile per process
    sgd_steps = njit(cache=False, nogil=True, fastmath=FASTMATH)(_sgd_steps)


_NONE = np.zeros(0, np.float32)  # an unused anchor or offset (never written)
_ARRAYS = TRAINING  # the trained copy and the gradient, reused once unreferenced


class Job(NamedTuple):
    """One client's checked inputs of :func:`sgd_steps` (see ``LogRegTrainer.compiled_job``)."""

    theta: np.ndarray
    x: np.ndarray
    y: np.ndarray
    order: np.ndarray
    batch: int
    lr: float
    l2: float
    steps: int
    num_classes: int
    mu: float = 0.0
    anchor: np.ndarray | None = None  # None: the start params
    offset: np.ndarray | None = None


def run(job: Job) -> FitResult:
    """Run one client's compiled local training."""
    # writable inputs always: numba compiles (and caches) one variant per array flag set
    theta = _ARRAYS.empty(np.size(job.theta), np.float32)  # the copy that trains, in place
    np.copyto(theta, np.asarray(job.theta).reshape(-1), casting="same_kind")
    mu = float(job.mu)
    if mu == 0.0:  # no proximal term: the kernel never reads the anchor
        anchor = _NONE
    elif job.anchor is None:  # the start params, kept before training moves ``theta``
        anchor = theta.copy()
    else:
        anchor = np.array(job.anchor, dtype=np.float32)
    offset = _NONE if job.offset is None else np.array(job.offset, np.float32)
    total = sgd_steps(
        theta,
        _ARRAYS.empty(theta.size, np.float32),  # scratch: free again on return
        np.require(job.x, requirements="W"),
        job.y,
        job.order,
        job.batch,
        job.lr,
        job.l2,
        job.steps,
        job.num_classes,
        mu,
        anchor,
        offset,
        job.offset is not None,
    )
    return FitResult(params=theta, loss=total / job.steps, num_examples=len(job.y), steps=job.steps)


def _threads() -> int:
    """Cores this process may use (affinity-aware), or ``FEDLAKE_CLIENT_THREADS``."""
    forced = os.environ.get("FEDLAKE_CLIENT_THREADS")
    if forced and forced.isdigit() and int(forced) >= 1:
        return int(forced)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


THREADS = _threads()
_POOL: ThreadPoolExecutor | None = None  # one per process, created on first use


def _forget_pool() -> None:
    """A forked child inherits the pool object but not its threads: start a new one."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_many(jobs: Sequence[Job]) -> list[FitResult]:
    """Run clients' compiled training on every core at once (the loop releases the GIL).

    Each job carries its own minibatch order, so results do not depend on the interleaving.
    """
    global _POOL
    if len(jobs) < 2 or THREADS < 2:
        return [run(job) for job in jobs]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="fedlake-logreg")
    # longest first, so one big client does not finish alone after the others
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].steps * len(jobs[i].theta))
    done = dict(zip(order, _POOL.map(run, [jobs[i] for i in order]), strict=True))
    return [done[i] for i in range(len(jobs))]
