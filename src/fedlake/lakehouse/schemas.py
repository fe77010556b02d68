"""Explicit Arrow schemas of the four lakehouse tables, and rows-to-Arrow conversion.

The column lists are plain data; pyarrow is imported only when a schema or table is built.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlake.orchestration.interfaces import TABLES

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CLIENT_STATUSES",
    "COLUMNS",
    "JSON_COLUMNS",
    "TIME_COLUMN",
    "Column",
    "check_table",
    "params_from_bytes",
    "params_to_bytes",
    "table_schema",
    "to_arrow",
]

# (name, type, nullable); types: str, int64, float64, binary, timestamp (us, UTC).
Column = tuple[str, str, bool]

COLUMNS: dict[str, tuple[Column, ...]] = {
    "models": (
        ("run_id", "str", False),
        ("round", "int64", False),
        ("params", "binary", False),  # float32 little-endian bytes of the flat vector
        ("spec", "str", False),  # ParamSpec JSON
        ("model_config", "str", False),  # JSON: build_trainer(**model_config)
        ("metrics", "str", False),  # JSON
        ("accuracy", "float64", True),
        ("loss", "float64", True),
        ("created_at", "timestamp", False),
    ),
    "rounds": (
        ("run_id", "str", False),
        ("round", "int64", False),
        ("attempt", "int64", False),
        ("status", "str", False),
        ("cohort", "str", False),  # JSON list of client ids
        ("num_sampled", "int64", False),
        ("num_completed", "int64", False),
        ("num_dropped", "int64", False),  # unavailable (returned nothing)
        ("num_failed", "int64", False),  # crashed: local error or lost worker
        ("num_rejected", "int64", False),
        ("train_loss", "float64", True),  # null when no update was accepted
        ("eval_loss", "float64", True),  # null on retried or failed attempts
        ("eval_accuracy", "float64", True),
        ("bytes_up", "int64", False),
        ("bytes_down", "int64", False),
        ("upload_ratio", "float64", True),  # float32 bytes of the deltas sent / bytes_up
        ("download_ratio", "float64", True),  # float32 bytes of the model / message bytes
        ("duration_s", "float64", False),
        ("metrics", "str", False),  # JSON
        ("created_at", "timestamp", False),
        ("epsilon", "float64", True),  # DP runs: privacy spent so far, at delta
        ("delta", "float64", True),
    ),
    "client_updates": (  # metadata only: parameters never leave the aggregator
        ("run_id", "str", False),
        ("round", "int64", False),
        ("attempt", "int64", False),
        ("client_id", "str", False),
        ("status", "str", False),  # accepted | rejected | dropped | failed
        ("reason", "str", True),
        ("num_examples", "int64", False),
        ("update_norm", "float64", True),
        ("bytes", "int64", False),  # uploaded: the encoded payload's length
        ("bytes_down", "int64", True),  # the model message sent to this client
        ("train_loss", "float64", True),
        ("duration_s", "float64", True),
        ("created_at", "timestamp", False),
    ),
    "audit": (
        ("time", "timestamp", False),
        ("run_id", "str", False),
        ("actor", "str", False),
        ("action", "str", False),
        ("object", "str", False),
        ("details", "str", False),  # JSON
    ),
}
JSON_COLUMNS: dict[str, frozenset[str]] = {
    "models": frozenset({"spec", "model_config", "metrics"}),
    "rounds": frozenset({"cohort", "metrics"}),
    "client_updates": frozenset(),
    "audit": frozenset({"details"}),
}
TIME_COLUMN: dict[str, str] = {
    "models": "created_at",
    "rounds": "created_at",
    "client_updates": "created_at",
    "audit": "time",
}
CLIENT_STATUSES = ("accepted", "rejected", "dropped", "failed")


def check_table(table: str) -> str:
    """Return ``table`` if it is one of the four lakehouse tables, else raise ValueError."""
    if table not in COLUMNS:
        raise ValueError(f"unknown table {table!r}; the lakehouse tables are: {', '.join(TABLES)}")
    return table


@functools.cache
def table_schema(table: str) -> pa.Schema:
    """The Arrow schema of ``table`` (timestamps are microseconds, UTC)."""
    import pyarrow as pa

    types = {
        "str": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "binary": pa.binary(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema(
        [
            pa.field(name, types[kind], nullable=nullable)
            for name, kind, nullable in COLUMNS[check_table(table)]
        ]
    )


def params_to_bytes(params: Any) -> bytes:
    """Flat parameters as float32 little-endian bytes (bytes-like values pass through)."""
    if isinstance(params, (bytes, bytearray, memoryview)):
        return bytes(params)
    return np.ascontiguousarray(np.asarray(params, dtype="<f4").reshape(-1)).tobytes()


def params_from_bytes(blob: bytes) -> np.ndarray:
    """Inverse of :func:`params_to_bytes`: a new writable float32 vector."""
    if len(blob) % 4:
        raise ValueError(f"params blob must hold float32 values, got {len(blob)} bytes")
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def to_arrow(
    table: str, rows: Sequence[Mapping[str, Any]], *, now: datetime | None = None
) -> pa.Table:
    """Validate and convert dict rows to an Arrow table with the exact schema of ``table``.

    Missing nullable columns become null; a missing timestamp becomes ``now`` (UTC);
    dicts/lists in JSON columns are serialised; numpy scalars and arrays are accepted.

    Raises:
        ValueError: unknown table or column, a required value missing, or invalid JSON text.
    """
    import pyarrow as pa

    schema = table_schema(table)
    names = [name for name, _, _ in COLUMNS[table]]
    now = now or datetime.now(UTC)
    data: dict[str, list[Any]] = {name: [] for name in names}
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - set(data))
        if unknown:
            raise ValueError(
                f"{table} row {i}: unknown columns {', '.join(unknown)}; "
                f"accepted: {', '.join(names)}"
            )
        for name, kind, nullable in COLUMNS[table]:
            value = _convert(table, name, kind, row.get(name), now)
            if value is None and not nullable:
                raise ValueError(f"{table} row {i}: column {name!r} is required, got no value")
            data[name].append(value)
        if table == "client_updates" and data["status"][-1] not in CLIENT_STATUSES:
            raise ValueError(
                f"client_updates row {i}: status must be one of {', '.join(CLIENT_STATUSES)}, "
                f"got {data['status'][-1]!r}"
            )
    return pa.Table.from_pydict(data, schema=schema)


def _convert(table: str, name: str, kind: str, value: Any, now: datetime) -> Any:
    if kind == "timestamp":
        if value is None:
            return now
        if not isinstance(value, datetime):
            raise ValueError(f"{table}.{name} must be a datetime, got {type(value).__name__}")
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if value is None:
        return None
    if kind == "binary":
        return params_to_bytes(value)
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "str":
        if name in JSON_COLUMNS[table]:
            return _json_text(table, name, value)
        return str(value)
    if kind == "int64":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{table}.{name} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _json_text(table: str, name: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{table}.{name} must be JSON text, got {value[:80]!r}: {err}"
            ) from err
        return value
    return json.dumps(value, sort_keys=True, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
