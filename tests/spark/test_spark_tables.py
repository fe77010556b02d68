"""Clients' data in a table partitioned by ``client_id`` (Delta and Parquet), read inside
the Spark tasks, one client's rows each, never collected on the driver."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fedlake.backends.inline import InlineExecutor
from fedlake.backends.spark import SparkExecutor
from fedlake.client.stores import MemoryStateStore
from fedlake.data.base import InMemoryClientData
from fedlake.data.sources import TableClientData, write_client_table
from fedlake.testing.conformance import toy_fleet, toy_task


@pytest.mark.parametrize("format", ["delta", "parquet"])
def test_the_tasks_read_their_clients_rows(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format: str
) -> None:
    fleet = toy_fleet(clients=6)
    clients = [f"c{i}" for i in range(6)]
    in_memory = InMemoryClientData({c: fleet.data.load(c) for c in clients})
    path = tmp_path / "clients"
    write_client_table(in_memory, path, format=format, partition_by_client=True)
    table = dataclasses.replace(fleet, data=TableClientData(path, format=format))
    task = toy_task(fleet)

    inline = InlineExecutor(table, MemoryStateStore(), chunk=1)
    expected = {o.client_id: o for o in inline.map_clients(task, clients)}

    def no_rows_here(self: TableClientData, client_id: str) -> Any:
        raise AssertionError(f"the driver read {client_id}'s rows")

    monkeypatch.setattr(TableClientData, "load", no_rows_here)  # this process only
    executor = SparkExecutor(table, MemoryStateStore(), spark=spark, partitions=3)
    try:
        got = {o.client_id: o for o in executor.map_clients(task, clients)}
    finally:
        executor.close()
    assert sorted(got) == clients
    for cid in clients:
        assert bytes(got[cid].payloads["delta"]) == bytes(expected[cid].payloads["delta"])
