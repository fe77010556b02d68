"""The Spark executor passes the executor conformance suite on local Spark, with the
clients' states held by the driver or in a folder the tasks open themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedlake.backends.spark import SparkExecutor
from fedlake.client.fleet import ClientFleet
from fedlake.client.folder_store import FolderStateStore
from fedlake.client.stores import ClientStateStore
from fedlake.orchestration.interfaces import Executor
from fedlake.testing import ExecutorConformance
from fedlake.testing.conformance import toy_fleet, toy_task


class TestSparkDriverHeldStates(ExecutorConformance):
    @pytest.fixture(autouse=True)
    def _session(self, spark: Any) -> None:
        self.session = spark

    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        return SparkExecutor(fleet, store, spark=self.session, partitions=3)


def test_states_stay_in_the_folder_the_tasks_open(spark: Any, tmp_path: Path) -> None:
    store = FolderStateStore(tmp_path / "states")
    fleet = toy_fleet()
    executor = SparkExecutor(fleet, store, spark=spark, partitions=2)
    try:
        first = list(executor.map_clients(toy_task(fleet, 0), ["c1", "c2", "c3"]))
        assert len(first) == 3
        kept = store.load("c1")  # written by a Spark task, read here from the folder
        assert kept is not None and kept["states"].get("error_feedback") is not None
        assert executor._records(["c1"]) == {}  # nothing of it travels through the driver
    finally:
        executor.close()
