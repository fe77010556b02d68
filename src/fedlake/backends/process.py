"""Run clients in a pool of spawned worker processes.

``spawn`` (not fork): delta-rs and torch misbehave in forked children. The fleet (data,
trainer, recipe spec) is sent once per worker through the pool initializer; each round
ships only the task, the chunk's client ids and their records from the store (a worker
keeps no state between chunks), and brings back the outcomes and the changed records.
Clients run one by one, so results are bit-identical to the inline executor's
``vectorize = false``. With ``fold=True`` the workers also screen and fold their chunks'
replies (linear aggregators), so only partial sums travel back (``fold_clients``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from fedlake.client.fleet import ClientFleet
from fedlake.client.stores import ClientStateStore, MemoryStateStore, Record
from fedlake.core.task import ClientFailure, ClientOutcome, ClientTask, FailureReason
from fedlake.orchestration.folding import Folded, FoldPlan, fold_outcomes

_FLEET: ClientFleet | None = None


def _init_worker(fleet: ClientFleet, threads: int) -> None:
    global _FLEET
    _FLEET = fleet
    # ``threads`` BLAS/OpenMP/torch threads per worker: the workers already use the cores.
    # Unlimited, each worker's OpenBLAS starts a thread per core and two workers on two
    # cores ran slower than one (1,000 activity clients: 103 against 128 clients/s; 1.8x
    # faster than one worker once limited).
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)  # for the worker's life (never restored)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _run_chunk(
    task: ClientTask,
    client_ids: Sequence[str],
    records: dict[str, Record],
    variants: Mapping[str, str],
) -> tuple[list[ClientOutcome], dict[str, Record]]:
    assert _FLEET is not None, "worker was not initialised"
    store = MemoryStateStore(records)
    runtime = _FLEET.runtime(store)
    outcomes = [runtime.handle(task, cid, variants.get(cid)) for cid in client_ids]
    changed = {cid: rec for cid, rec in store.records.items() if rec is not records.get(cid)}
    return outcomes, changed


def _fold_chunk(
    task: ClientTask,
    client_ids: Sequence[str],
    records: dict[str, Record],
    variants: Mapping[str, str],
    plan: FoldPlan,
) -> tuple[Folded, dict[str, Record]]:
    assert _FLEET is not None, "worker was not initialised"
    outcomes, changed = _run_chunk(task, client_ids, records, variants)
    return fold_outcomes(outcomes, plan, _FLEET.algorithm), changed


class ProcessExecutor:
    """A spawn-based process pool over ``fleet``; ``workers`` defaults to the number of cores.

    ``fold``: rounds fold replies in the workers (:meth:`fold_clients`) instead of shipping
    every update to the driver; sums then add in another order (float tolerance).
    """

    def __init__(
        self,
        fleet: ClientFleet,
        store: ClientStateStore | None = None,
        *,
        workers: int | None = None,
        threads_per_worker: int = 1,
        fold: bool = False,
    ) -> None:
        n = workers or os.cpu_count() or 1
        if n < 1:
            raise ValueError(f"workers must be >= 1, got {n}")
        self.workers = n
        self.threads_per_worker = threads_per_worker
        self.fleet = fleet
        self.store = store if store is not None else MemoryStateStore()
        self.folds = fold
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.fleet, self.threads_per_worker),
            )
        return self._pool

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """Split the cohort into chunks (about two per worker) and yield outcomes as they finish."""
        pool = self._ensure_pool()
        variants = variants or {}
        futures = {}
        for chunk in self._chunks(cohort):
            records = {c: r for c in chunk if (r := self.store.load(c)) is not None}
            own = {c: variants[c] for c in chunk if c in variants}
            futures[pool.submit(_run_chunk, task.only(chunk), chunk, records, own)] = chunk
        for fut in as_completed(futures):
            try:
                outcomes, changed = fut.result()
            except Exception as exc:  # a dead worker loses its chunk, not the round
                for cid in futures[fut]:
                    yield ClientFailure(
                        cid, FailureReason.LOST, f"worker failed: {type(exc).__name__}: {exc}"
                    )
                continue
            for cid, record in changed.items():
                self.store.save(cid, record)
            yield from outcomes

    def fold_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        plan: FoldPlan,
        *,
        variants: Mapping[str, str] | None = None,
    ) -> list[Folded]:
        """Each chunk's screened and folded replies, in chunk order (a lost worker's clients
        are recorded as lost)."""
        pool = self._ensure_pool()
        variants = variants or {}
        futures = []
        for chunk in self._chunks(cohort):
            records = {c: r for c in chunk if (r := self.store.load(c)) is not None}
            own = {c: variants[c] for c in chunk if c in variants}
            args = (task.only(chunk), chunk, records, own, plan)
            futures.append((pool.submit(_fold_chunk, *args), chunk))
        parts: list[Folded] = []
        for fut, chunk in futures:
            try:
                folded, changed = fut.result()
            except Exception as exc:  # a dead worker loses its chunk, not the round
                lost = [
                    ClientFailure(
                        c, FailureReason.LOST, f"worker failed: {type(exc).__name__}: {exc}"
                    )
                    for c in chunk
                ]
                folded, changed = Folded.of_failures(lost), {}
            for cid, record in changed.items():
                self.store.save(cid, record)
            parts.append(folded)
        return parts

    def _chunks(self, cohort: Sequence[str]) -> list[list[str]]:
        n_chunks = max(1, min(len(cohort), 2 * self.workers))
        return [c for c in (list(cohort[i::n_chunks]) for i in range(n_chunks)) if c]

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
