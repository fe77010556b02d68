"""Run a round's cohort as Spark tasks: ``local[N]`` on a laptop, a cluster on Databricks.

The cohort is split into partitions, each a Spark task that runs many clients one after
another in a Python worker (bit for bit what the process executor does). The fleet (data,
trainer, recipe spec) travels once per run as a broadcast variable, each round's task as
one broadcast (a 100 MB model is not pickled into every task's closure), and client
states live where the clients run: a folder store under ``store_root``, keyed by client
id (a Unity Catalog volume path on Databricks), never in the driver.

Two ways a round comes back:

* ``map_clients``: one Spark job per partition, run side by side; a job that fails (its
  Python worker killed, its executor lost, past Spark's own task retries) loses only its
  partition's clients, each recorded as ``lost``; the round goes on without them.
* ``fold_clients`` (``fold=True``, linear aggregators): each partition screens and folds
  its replies, and the partial folds combine on the executors by ``treeReduce``; the
  driver receives one fold (O(d)) and the clients' records, whatever the cohort size.
  ``treeReduce`` takes no zero value, so no model-sized array rides in the closure. A job
  that fails past its retries records the whole cohort as lost (the round is retried per
  ``max_retries``). Partial sums add in Spark's order: float tolerance, not bit for bit.

Nothing uses barrier mode (it fails under dynamic allocation).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fedlake.client.fleet import ClientFleet
from fedlake.client.folder_store import FolderStateStore
from fedlake.core.extras import require
from fedlake.core.task import ClientFailure, ClientOutcome, ClientTask, FailureReason
from fedlake.orchestration.folding import Folded, FoldPlan, fold_outcomes, merge_folded

__all__ = ["SparkExecutor"]


def _runtime(fleet: ClientFleet, store_root: str) -> Any:
    """This Python worker's client runtime over the shared folder store."""
    return fleet.runtime(FolderStateStore(store_root))


def _run_partition(
    fleet_b: Any, task_b: Any, store_root: str, variants: Mapping[str, str], rows: Iterable[str]
) -> Iterator[ClientOutcome]:
    """Run a partition's clients (inside a Spark task)."""
    runtime = _runtime(fleet_b.value, store_root)
    task: ClientTask = task_b.value
    for cid in rows:
        yield runtime.handle(task, cid, variants.get(cid))


def _fold_partition(
    fleet_b: Any,
    task_b: Any,
    store_root: str,
    variants: Mapping[str, str],
    plan_b: Any,
    rows: Iterable[str],
) -> Iterator[Folded]:
    """Run a partition's clients and fold their screened replies (inside a Spark task)."""
    fleet: ClientFleet = fleet_b.value
    outcomes = _run_partition(fleet_b, task_b, store_root, variants, rows)
    yield fold_outcomes(outcomes, plan_b.value, fleet.algorithm)


def _merge_two(fleet_b: Any, plan_b: Any, a: Folded, b: Folded) -> Folded:
    """Two partial folds as one (on an executor inside ``treeReduce``, or the driver last)."""
    cohort = [rec.client_id for rec in (*a.records, *b.records)]
    return merge_folded([a, b], fleet_b.value.algorithm, plan_b.value, cohort)


class SparkExecutor:
    """A cohort's clients as Spark tasks over ``fleet``, states under ``store_root``.

    Args:
        fleet: the clients' data, trainer and recipe (broadcast once).
        store_root: a folder every executor reaches, where each client's state lives.
        spark: a SparkSession (None: one on ``master``, built and stopped here).
        master: the master of a session built here (None: ``local[<cores>]``).
        partitions: Spark tasks per round (None: twice the default parallelism).
        fold: rounds fold replies in the tasks (:meth:`fold_clients`).
    """

    def __init__(
        self,
        fleet: ClientFleet,
        store_root: str | Path,
        *,
        spark: Any = None,
        master: str | None = None,
        partitions: int | None = None,
        fold: bool = False,
    ) -> None:
        self._own = spark is None
        if spark is None:
            spark = _session(master or f"local[{os.cpu_count() or 1}]")
        self.spark = spark
        self.sc = spark.sparkContext
        self.store_root = str(store_root)
        Path(self.store_root).mkdir(parents=True, exist_ok=True)
        self.partitions = partitions or 2 * self.sc.defaultParallelism
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        self.folds = fold
        self.fleet = fleet
        self._fleet_b = self.sc.broadcast(fleet)

    def _chunks(self, cohort: Sequence[str]) -> list[list[str]]:
        n = max(1, min(len(cohort), self.partitions))
        return [c for c in (list(cohort[i::n]) for i in range(n)) if c]

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """One Spark job per partition, side by side; outcomes as the jobs finish."""
        chunks = self._chunks(cohort)
        task_b = self.sc.broadcast(task)
        own = dict(variants or {})
        fleet_b, root = self._fleet_b, self.store_root

        def run(chunk: list[str]) -> list[ClientOutcome]:
            rdd = self.sc.parallelize(chunk, 1)
            return rdd.mapPartitions(
                lambda rows: _run_partition(fleet_b, task_b, root, own, rows)
            ).collect()

        try:
            with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
                futures = {pool.submit(run, chunk): chunk for chunk in chunks}
                for fut in as_completed(futures):
                    try:
                        outcomes = fut.result()
                    except Exception as exc:  # a lost task loses its clients, not the round
                        yield from _lost(futures[fut], exc)
                        continue
                    yield from outcomes
        finally:
            task_b.destroy()

    def fold_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        plan: FoldPlan,
        *,
        variants: Mapping[str, str] | None = None,
    ) -> list[Folded]:
        """The cohort's screened replies folded in the tasks and merged by tree reduction."""
        chunks = self._chunks(cohort)
        # the task and the plan (its mask may be model-sized) travel as broadcasts, not
        # in every task's closure
        task_b, plan_b = self.sc.broadcast(task), self.sc.broadcast(plan)
        own = dict(variants or {})
        fleet_b, root = self._fleet_b, self.store_root
        try:
            rdd = self.sc.parallelize(chunks, len(chunks)).flatMap(lambda chunk: chunk)
            folded = rdd.mapPartitions(
                lambda rows: _fold_partition(fleet_b, task_b, root, own, plan_b, rows)
            ).treeReduce(lambda a, b: _merge_two(fleet_b, plan_b, a, b), depth=2)
        except Exception as exc:  # past Spark's retries: the attempt's clients are lost
            return [Folded.of_failures(list(_lost(cohort, exc)))]
        finally:
            task_b.destroy()
            plan_b.destroy()
        return [folded]

    def close(self) -> None:
        """Release the broadcast fleet; stop the session if it was built here."""
        try:
            self._fleet_b.destroy()
        finally:
            if self._own:
                self.spark.stop()


def _lost(clients: Iterable[str], exc: BaseException) -> Iterator[ClientFailure]:
    """Each client of a failed Spark job, as lost."""
    reason = f"spark task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    for cid in clients:
        yield ClientFailure(cid, FailureReason.LOST, reason)


def _session(master: str) -> Any:
    """A SparkSession on ``master`` for fedlake's rounds (no UI; Arrow on)."""
    require("pyspark", extra="spark", purpose="the spark executor")
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master)
        .appName("fedlake")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
