"""Table schemas and row conversion, without touching Delta."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from fedlake.lakehouse.schemas import (
    COLUMNS,
    params_from_bytes,
    params_to_bytes,
    table_schema,
    to_arrow,
)
from fedlake.orchestration.interfaces import TABLES

TS = pa.timestamp("us", tz="UTC")


def test_the_four_tables_have_the_agreed_columns():
    assert tuple(COLUMNS) == TABLES
    models = table_schema("models")
    assert models.field("params").type == pa.binary()
    assert models.field("accuracy").nullable and not models.field("spec").nullable
    assert table_schema("rounds").field("created_at").type == TS
    assert table_schema("audit").names == ["time", "run_id", "actor", "action", "object", "details"]
    nullable = {f.name for f in table_schema("client_updates") if f.nullable}
    assert nullable == {"reason", "update_norm", "train_loss", "duration_s", "bytes_down"}
    assert "params" not in table_schema("client_updates").names
    # traffic: encoded bytes per client both ways, and the ratio against float32 per round
    assert {"bytes", "bytes_down"} <= set(table_schema("client_updates").names)
    rounds = table_schema("rounds")
    assert rounds.field("upload_ratio").nullable and rounds.field("download_ratio").nullable
    with pytest.raises(ValueError, match="unknown table 'metrics'"):
        table_schema("metrics")


def test_params_bytes_are_float32_little_endian():
    v = np.array([1.5, -2.0], dtype=np.float64)
    blob = params_to_bytes(v)
    assert blob == np.array([1.5, -2.0], dtype="<f4").tobytes()
    assert params_to_bytes(blob) == blob
    np.testing.assert_array_equal(params_from_bytes(blob), v.astype(np.float32))
    with pytest.raises(ValueError, match="must hold float32 values, got 5 bytes"):
        params_from_bytes(b"12345")


def test_conversion_rules():
    naive = datetime(2024, 1, 2, 3, 4, 5)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    table = to_arrow(
        "audit",
        [
            {"time": naive, "run_id": 1, "actor": "a", "action": "b", "object": "c", "details": {}},
            {"run_id": "r", "actor": "a", "action": "b", "object": "c", "details": "[1]"},
        ],
        now=now,
    )
    assert table.schema.equals(table_schema("audit"))
    rows = table.to_pylist()
    assert rows[0]["time"] == naive.replace(tzinfo=UTC) and rows[1]["time"] == now
    assert rows[0]["run_id"] == "1" and rows[0]["details"] == "{}"
    with pytest.raises(ValueError, match="audit.time must be a datetime, got str"):
        to_arrow("audit", [{"time": "yesterday"}])
    row = {"run_id": "r", "round": 1.5, "attempt": 0, "client_id": "c", "status": "accepted"}
    with pytest.raises(ValueError, match="client_updates.round must be an integer, got 1.5"):
        to_arrow("client_updates", [{**row, "num_examples": 1, "bytes": 1}])
