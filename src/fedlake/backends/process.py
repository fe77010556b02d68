"""Run clients in a pool of spawned worker processes.

``spawn`` (not fork): delta-rs and torch misbehave in forked children. The
job (data source, trainer, recipe factory) is sent once per worker through the
pool initializer; each round only ships the task and client ids.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from fedlake.client.local import ClientFailure, ClientJob, ClientResult, ClientTask

_JOB: ClientJob | None = None


def _init_worker(job: ClientJob, threads: int) -> None:
    global _JOB
    _JOB = job
    try:  # one BLAS/torch thread per worker: workers already use the cores
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _run_chunk(task: ClientTask, client_ids: Sequence[str]) -> list[ClientResult]:
    assert _JOB is not None, "worker was not initialised"
    return [_JOB.run(task, cid) for cid in client_ids]


class ProcessExecutor:
    """A spawn-based process pool; ``workers`` defaults to the number of cores."""

    def __init__(self, workers: int | None = None, *, threads_per_worker: int = 1) -> None:
        n = workers or os.cpu_count() or 1
        if n < 1:
            raise ValueError(f"workers must be >= 1, got {n}")
        self.workers = n
        self.threads_per_worker = threads_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._job: ClientJob | None = None

    def _ensure_pool(self, job: ClientJob) -> ProcessPoolExecutor:
        if self._pool is None or self._job is not job:
            self.close()
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(job, self.threads_per_worker),
            )
            self._job = job
        return self._pool

    def map_clients(
        self, job: ClientJob, task: ClientTask, cohort: Sequence[str]
    ) -> Iterator[ClientResult]:
        """Split the cohort into chunks (about two per worker) and yield results as they finish."""
        pool = self._ensure_pool(job)
        n_chunks = max(1, min(len(cohort), 2 * self.workers))
        chunks = [list(cohort[i::n_chunks]) for i in range(n_chunks)]
        futures = {pool.submit(_run_chunk, task.only(c), c): c for c in chunks if c}
        for fut in as_completed(futures):
            try:
                yield from fut.result()
            except Exception as exc:  # a dead worker loses its chunk, not the round
                for cid in futures[fut]:
                    yield ClientFailure(cid, f"worker failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._job = None
