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
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from fedlake.client.fleet import ClientFleet
from fedlake.client.folder_store import FolderStateStore
from fedlake.client.stores import ClientStateStore, MemoryStateStore, Record
from fedlake.core.extras import require
from fedlake.core.task import ClientFailure, ClientOutcome, ClientTask, FailureReason
from fedlake.orchestration.folding import Folded, FoldPlan, fold_outcomes, merge_folded

__all__ = ["SparkExecutor", "active_session"]

Records = dict[str, Record]


def _partition_store(store_root: str | None, records: Records) -> ClientStateStore:
    """Where a partition's clients keep their states: the shared folder, or the records
    the driver shipped with the partition (a driver-held store)."""
    return FolderStateStore(store_root) if store_root is not None else MemoryStateStore(records)


def _changed(store: ClientStateStore, records: Records) -> Records:
    """The records a partition's clients changed (none to send back for a folder store)."""
    if not isinstance(store, MemoryStateStore):
        return {}
    return {cid: rec for cid, rec in store.records.items() if rec is not records.get(cid)}


def _run_partition(
    fleet_b: Any,
    task_b: Any,
    store_root: str | None,
    records: Records,
    variants: Mapping[str, str],
    rows: Iterable[str],
) -> Iterator[tuple[list[ClientOutcome], Records]]:
    """Run a partition's clients, one after another (inside a Spark task)."""
    fleet: ClientFleet = fleet_b.value
    task: ClientTask = task_b.value
    store = _partition_store(store_root, records)
    runtime = fleet.runtime(store)
    outcomes = [runtime.handle(task, cid, variants.get(cid)) for cid in rows]
    yield outcomes, _changed(store, records)


def _fold_partition(
    fleet_b: Any,
    task_b: Any,
    plan_b: Any,
    store_root: str | None,
    records: Records,
    variants: Mapping[str, str],
    rows: Iterable[str],
) -> Iterator[tuple[Folded, Records]]:
    """Run a partition's clients and fold their screened replies (inside a Spark task)."""
    fleet: ClientFleet = fleet_b.value
    for outcomes, changed in _run_partition(fleet_b, task_b, store_root, records, variants, rows):
        yield fold_outcomes(outcomes, plan_b.value, fleet.algorithm), changed


def _merge_two(
    fleet_b: Any, plan_b: Any, a: tuple[Folded, Records], b: tuple[Folded, Records]
) -> tuple[Folded, Records]:
    """Two partial folds as one (on an executor inside ``treeReduce``, or the driver last)."""
    cohort = [rec.client_id for rec in (*a[0].records, *b[0].records)]
    return merge_folded([a[0], b[0]], fleet_b.value.algorithm, plan_b.value, cohort), {
        **a[1],
        **b[1],
    }


class SparkExecutor:
    """A cohort's clients as Spark tasks over ``fleet``.

    Args:
        fleet: the clients' data, trainer and recipe (broadcast once).
        store: where clients keep their states. A :class:`FolderStateStore` on a path
            every executor reaches is opened by the tasks themselves (the states never
            pass through the driver); any other store stays on the driver and each
            partition's records travel with it and back (the simulator's stores, which
            checkpoints snapshot).
        spark: a SparkSession (None: one on ``master``, built and stopped here).
        master: the master of a session built here (None: ``local[<cores>]``).
        partitions: Spark tasks per round (None: twice the default parallelism).
        fold: rounds fold replies in the tasks (:meth:`fold_clients`).
    """

    def __init__(
        self,
        fleet: ClientFleet,
        store: ClientStateStore,
        *,
        spark: Any = None,
        master: str | None = None,
        partitions: int | None = None,
        fold: bool = False,
    ) -> None:
        if partitions is not None and partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self._own = spark is None
        if spark is None:
            spark = _session(master or f"local[{os.cpu_count() or 1}]")
        self.spark = spark
        self.sc = spark.sparkContext
        self.store = store
        self.store_root: str | None = None
        if isinstance(store, FolderStateStore):
            store.root.mkdir(parents=True, exist_ok=True)
            self.store_root = str(store.root)
        self.partitions = partitions or 2 * self.sc.defaultParallelism
        self.folds = fold
        self.fleet = fleet
        self._fleet_b = self.sc.broadcast(fleet)

    def _chunks(self, cohort: Sequence[str]) -> list[list[str]]:
        n = max(1, min(len(cohort), self.partitions))
        return [c for c in (list(cohort[i::n]) for i in range(n)) if c]

    def _records(self, chunk: Sequence[str]) -> Records:
        """A chunk's records from a driver-held store (none for a folder store)."""
        if self.store_root is not None:
            return {}
        return {c: r for c in chunk if (r := self.store.load(c)) is not None}

    def _keep(self, changed: Records) -> None:
        for cid, record in changed.items():
            self.store.save(cid, record)

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """One Spark job per partition, side by side; outcomes as the jobs finish."""
        chunks = self._chunks(cohort)
        # per-client messages (a secure stage's inbox) go only to their partition
        tasks = [task.only(chunk) for chunk in chunks] if task.inbox else [task]
        broadcasts = [self.sc.broadcast(t) for t in tasks]
        own = dict(variants or {})
        fleet_b, root = self._fleet_b, self.store_root

        def run(i: int, chunk: list[str]) -> list[tuple[list[ClientOutcome], Records]]:
            records = self._records(chunk)
            rdd = self.sc.parallelize(chunk, 1)
            task_b = broadcasts[i if len(broadcasts) > 1 else 0]
            return rdd.mapPartitions(
                lambda rows: _run_partition(fleet_b, task_b, root, records, own, rows)
            ).collect()

        try:
            with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
                futures = {pool.submit(run, i, chunk): chunk for i, chunk in enumerate(chunks)}
                for fut in as_completed(futures):
                    try:
                        ((outcomes, changed),) = fut.result()
                    except Exception as exc:  # a lost task loses its clients, not the round
                        yield from _lost(futures[fut], exc)
                        continue
                    self._keep(changed)
                    yield from outcomes
        finally:
            for task_b in broadcasts:
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
        # in every task's closure; treeReduce has no zero value to ship
        task_b, plan_b = self.sc.broadcast(task), self.sc.broadcast(plan)
        own = dict(variants or {})
        fleet_b, root = self._fleet_b, self.store_root
        shipped = [(chunk, self._records(chunk)) for chunk in chunks]
        try:
            folded, changed = (
                self.sc.parallelize(shipped, len(shipped))
                .mapPartitions(
                    lambda parts: (
                        out
                        for chunk, records in parts
                        for out in _fold_partition(
                            fleet_b, task_b, plan_b, root, records, own, chunk
                        )
                    )
                )
                .treeReduce(lambda a, b: _merge_two(fleet_b, plan_b, a, b), depth=2)
            )
        except Exception as exc:  # past Spark's retries: the attempt's clients are lost
            return [Folded.of_failures(list(_lost(cohort, exc)))]
        finally:
            task_b.destroy()
            plan_b.destroy()
        self._keep(changed)
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


def active_session() -> Any:
    """The SparkSession already running here (a Databricks notebook's or job's), or None."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def _session(master: str) -> Any:
    """A SparkSession on ``master`` for fedlake's rounds (no UI; Arrow on)."""
    require("pyspark", extra="spark", purpose="the spark executor")
    from pyspark.sql import SparkSession

    # the Python workers run this interpreter (its packages, fedlake among them), not the
    # first python3 on PATH; a cluster's own setting wins
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master(master)
        .appName("fedlake")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")  # a lost task is a client's failure, not noise
    return session
