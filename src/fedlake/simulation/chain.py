"""Calling the executor a simulation wrapper wraps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fedlake.core.task import ClientOutcome, ClientTask
from fedlake.orchestration.interfaces import Executor

__all__ = ["map_inner"]


def map_inner(
    inner: Executor, task: ClientTask, cohort: Sequence[str], variants: Mapping[str, str]
) -> Iterator[ClientOutcome]:
    """``inner.map_clients``, asking for client variants only when some client runs one
    (any executor runs honest clients; only a ``VariantExecutor`` runs variants)."""
    if not variants:
        return inner.map_clients(task, cohort)
    runs_variants: Any = inner
    return runs_variants.map_clients(task, cohort, variants=dict(variants))
