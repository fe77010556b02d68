"""Norm bounding.

Sun, Kairouz, Suresh and McMahan, "Can You Really Backdoor Federated Learning?",
NeurIPS 2019 workshop (arXiv:1911.07963).

Every update is scaled down to L2 norm at most ``max_norm`` before an inner rule
(the example-weighted mean by default) aggregates them, so no client can move the model
by more than ``max_norm``. With a fixed ``max_norm`` and a linear inner rule the result
is still linear and streams in O(d) memory. ``max_norm = None`` bounds by the median of
the round's update norms instead (adaptive, but it needs the whole cohort).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from fedlake.aggregators._matrix import row_sq_norms
from fedlake.aggregators.mean import weighted_mean
from fedlake.core.aggregator import Aggregator, Fold, FoldAccumulator, cohort_deltas
from fedlake.core.checks import check_positive_or_none
from fedlake.core.update import DELTA, ClientUpdate


def clip_update(update: ClientUpdate, max_norm: float, norm: float | None = None) -> ClientUpdate:
    """``update`` with its delta scaled down to norm ``max_norm`` when it is longer.

    ``norm`` is the delta's norm when already known (computed in float64: a float32 sum of
    squares overflows at 1e19).
    """
    delta = np.asarray(update.delta)
    if norm is None:
        norm = float(np.sqrt(row_sq_norms(delta[None, :])[0]))
    if norm <= max_norm:
        return update
    # the factor stays float64: max_norm / norm can be below float32's smallest normal
    clipped = (delta.astype(np.float64) * (max_norm / norm)).astype(np.float32)
    return replace(update, vectors={**update.vectors, DELTA: clipped})


def norm_bound(*, max_norm: float | None = None, inner: Aggregator | None = None) -> Aggregator:
    """Clip every delta to ``max_norm`` (None: the round's median norm), then ``inner``."""
    bound = check_positive_or_none("max_norm", max_norm)
    rule = inner if inner is not None else weighted_mean()
    name = f"norm_bound+{rule.name}"

    def aggregate(updates: Sequence[ClientUpdate], state: object) -> tuple[np.ndarray, object]:
        if not updates:
            raise ValueError("cannot aggregate an empty cohort")
        norms = np.sqrt(row_sq_norms(cohort_deltas(updates)))  # one pass, no copies
        limit = bound if bound is not None else float(np.median(norms))
        clipped = [clip_update(u, limit, float(n)) for u, n in zip(updates, norms, strict=True)]
        return rule.aggregate(clipped, state)

    fold = None
    if bound is not None and rule.linear and rule.fold is not None:
        inner_fold = rule.fold

        def add(acc: FoldAccumulator, u: ClientUpdate) -> FoldAccumulator:
            return inner_fold.add(acc, clip_update(u, bound))

        fold = Fold(inner_fold.start, add, inner_fold.result, inner_fold.merge)
    return Aggregator(
        rule.init,
        aggregate,
        linear=fold is not None,
        name=name,
        fold=fold,
        min_updates=rule.min_updates,
    )
