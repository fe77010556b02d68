"""Fit a pipeline the federated way: each client summarises its own rows, the server merges.

In simulation the loop below stands for the clients; only summaries cross from
:func:`client_summary` (client side) to :func:`merge` and :func:`fit_pipeline`
(server side).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fedlake.data.preprocess.dp import Mechanism, noisy_summary
from fedlake.data.preprocess.pipeline import FeaturePipeline, PipelineOptions, fit_pipeline
from fedlake.data.preprocess.summary import ClientSummary, merge, summarise

__all__ = ["RawColumns", "client_summary", "fit_federated"]

PREPROCESS_RNG = 7  # purpose tag of the summaries' noise generators


class RawColumns(Protocol):
    """A source of clients' raw training columns (e.g. :class:`TableClientData`)."""

    def client_ids(self) -> Sequence[str]:
        """All client ids, in a stable order."""
        ...

    def raw_columns(self, client_id: str) -> Mapping[str, np.ndarray]:
        """The raw feature columns of one client's training rows."""
        ...


def client_summary(
    columns: Mapping[str, Any],
    *,
    epsilon: float | None = None,
    mechanism: Mechanism = "laplace",
    delta: float = 1e-5,
    rng: np.random.Generator | None = None,
) -> ClientSummary:
    """What one client sends: its summary, noised when ``epsilon`` is given (needs ``rng``)."""
    summary = summarise(columns)
    if epsilon is None:
        return summary
    if rng is None:
        raise ValueError("a DP summary needs a seeded rng")
    return noisy_summary(summary, epsilon=epsilon, rng=rng, mechanism=mechanism, delta=delta)


def fit_federated(
    data: RawColumns,
    options: PipelineOptions | None = None,
    *,
    seed: int = 0,
    epsilon: float | None = None,
    mechanism: Mechanism = "laplace",
    delta: float = 1e-5,
) -> FeaturePipeline:
    """Every client's summary of its training rows, merged, fitted: deterministic in ``seed``."""
    summaries = [
        client_summary(
            data.raw_columns(cid),
            epsilon=epsilon,
            mechanism=mechanism,
            delta=delta,
            rng=np.random.default_rng([seed, PREPROCESS_RNG, k]),
        )
        for k, cid in enumerate(data.client_ids())
    ]
    return fit_pipeline(merge(summaries), options)
