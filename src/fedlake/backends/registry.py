"""Executors by config name (``[executor] kind``): a new executor is a new file plus a line here."""

from __future__ import annotations

from collections.abc import Callable

from fedlake.backends.inline import DEFAULT_CHUNK, InlineExecutor
from fedlake.backends.process import ProcessExecutor
from fedlake.client.fleet import ClientFleet
from fedlake.client.stores import ClientStateStore
from fedlake.orchestration.interfaces import Executor

__all__ = ["EXECUTORS", "ExecutorMaker", "inline", "process", "spark"]

# (fleet, store, *, workers, vectorize, fold, task_retries) -> Executor
ExecutorMaker = Callable[..., Executor]


def inline(
    fleet: ClientFleet,
    store: ClientStateStore,
    *,
    workers: int | None,
    vectorize: bool,
    fold: bool = False,
    task_retries: int = 0,
) -> Executor:
    """This process: the cohort trained vectorised (``vectorize``) or one client at a time."""
    if fold:
        raise ValueError("fold = true needs the process or spark executor")
    return InlineExecutor(fleet, store, chunk=DEFAULT_CHUNK if vectorize else 1)


def process(
    fleet: ClientFleet,
    store: ClientStateStore,
    *,
    workers: int | None,
    vectorize: bool,
    fold: bool = False,
    task_retries: int = 0,
) -> Executor:
    """``workers`` spawned processes, one client at a time each (folding when ``fold``)."""
    return ProcessExecutor(fleet, store, workers=workers, fold=fold)


def spark(
    fleet: ClientFleet,
    store: ClientStateStore,
    *,
    workers: int | None,
    vectorize: bool,
    fold: bool = False,
    task_retries: int = 0,
) -> Executor:
    """Spark tasks: on the active session (a Databricks cluster's), else ``local[workers]``
    (folding in the tasks, with tree aggregation, when ``fold``; a failed task tried
    ``task_retries`` more times before its clients count as lost)."""
    from fedlake.backends.spark import SparkExecutor, active_session

    session = active_session()  # a cluster's: its spark.task.maxFailures rules retries
    # local[N, F]: a failed task is tried F times before its clients count as lost
    master = None if session is not None else f"local[{workers or 1},{task_retries + 1}]"
    return SparkExecutor(fleet, store, spark=session, master=master, fold=fold)


EXECUTORS: dict[str, ExecutorMaker] = {"inline": inline, "process": process, "spark": spark}
