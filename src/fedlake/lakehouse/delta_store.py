"""A Store on Delta tables (delta-rs): append-only, schema-checked, safe for concurrent writers.

Tables live at ``root/catalog/schema/table`` so a run's folder maps one-to-one onto
Unity Catalog names (``catalog.schema.table``). Use spawn, not fork, for worker
processes: delta-rs panics in forked children.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlake.lakehouse.names import DEFAULT_CATALOG, DEFAULT_SCHEMA, TableName, check_identifier
from fedlake.lakehouse.schemas import (
    TIME_COLUMN,
    check_table,
    params_from_bytes,
    table_schema,
    to_arrow,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["CommitConflictError", "DeltaStore", "import_deltalake"]

INSTALL_HINT = "pip install 'fedlake[lakehouse]'"


class CommitConflictError(RuntimeError):
    """An append kept losing the race to concurrent commits and gave up."""


def import_deltalake() -> Any:
    """Import ``deltalake`` or raise ImportError with the install command."""
    try:
        import deltalake
    except ImportError as err:
        raise ImportError(f"the Delta store needs deltalake and pyarrow: {INSTALL_HINT}") from err
    return deltalake


def _write_delta(path: str, data: pa.Table) -> None:
    """One append commit (module-level so tests can inject failures).

    A table made before a nullable column was added (e.g. ``rounds.epsilon``) takes the
    new column (schema merge); any other difference is schema drift and raises.
    """
    deltalake = import_deltalake()
    mode = None
    if deltalake.DeltaTable.is_deltatable(path):
        have = {f.name for f in deltalake.DeltaTable(path).schema().fields}
        if have < set(data.schema.names):
            mode = "merge"
    deltalake.write_deltalake(path, data, mode="append", schema_mode=mode)


def _is_conflict(err: BaseException) -> bool:
    """True for errors that a retry can fix: lost commit races, incl. concurrent creation."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    if isinstance(err, CommitFailedError):
        return True
    text = str(err).lower()
    return isinstance(err, DeltaError) and "already exists" in text and "version" in text


class DeltaStore:
    """Store backed by Delta tables under ``root/catalog/schema/<table>``.

    Appends retry with exponential backoff and jitter when another writer (thread,
    spawn process or cluster job) commits first.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        catalog: str = DEFAULT_CATALOG,
        schema: str = DEFAULT_SCHEMA,
        max_retries: int = 8,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_s < 0 or max_backoff_s < backoff_s:
            raise ValueError(
                f"need 0 <= backoff_s <= max_backoff_s, got {backoff_s} and {max_backoff_s}"
            )
        import_deltalake()
        self.root = Path(root)
        self.catalog = check_identifier(catalog, part="catalog")
        self.schema = check_identifier(schema, part="schema")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._jitter = random.Random()  # backoff jitter only; never touches the global generator

    def __repr__(self) -> str:
        return f"DeltaStore({str(self.root)!r}, catalog={self.catalog!r}, schema={self.schema!r})"

    def table_name(self, table: str) -> TableName:
        """The Unity Catalog name of ``table`` (one of the four lakehouse tables)."""
        return TableName(self.catalog, self.schema, check_table(table))

    def path(self, table: str) -> Path:
        """Folder of the Delta table ``table``."""
        return self.table_name(table).local_path(self.root)

    def exists(self, table: str) -> bool:
        """Whether ``table`` has been created (by a first append)."""
        return bool(import_deltalake().DeltaTable.is_deltatable(str(self.path(table))))

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``rows`` in one commit, creating the table on first use.

        Raises:
            ValueError: unknown table or column, or a required value missing.
            CommitConflictError: still conflicting after ``max_retries`` retries.
        """
        data = to_arrow(table, list(rows))
        if data.num_rows == 0:
            return
        path = self.path(table)
        path.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.max_retries + 1):
            try:
                _write_delta(str(path), data)
                return
            except Exception as err:
                if not _is_conflict(err):
                    raise
                if attempt == self.max_retries:
                    raise CommitConflictError(
                        f"append to {self.table_name(table)} at {path} failed after "
                        f"{self.max_retries} retries on commit conflicts; last error: {err}"
                    ) from err
                time.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt + 1``: capped exponential, jittered 50-150%."""
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * self._jitter.uniform(0.5, 1.5)

    def read_arrow(self, table: str, *, filters: Any = None) -> pa.Table:
        """``table`` as Arrow, oldest rows first (an empty table when it does not exist)."""
        schema = table_schema(check_table(table))
        if not self.exists(table):
            return schema.empty_table()
        import pyarrow.compute as pc

        data = (
            import_deltalake().DeltaTable(str(self.path(table))).to_pyarrow_table(filters=filters)
        )
        # delta-rs returns files newest first; Arrow's stable sort on time restores commit order.
        return data.take(pc.sort_indices(data, sort_keys=[(TIME_COLUMN[table], "ascending")]))

    def read(self, table: str) -> list[dict[str, Any]]:
        """All rows of ``table`` as dicts, oldest first (empty list when it does not exist)."""
        return self.read_arrow(table).to_pylist()

    def read_models_params(self, run_id: str, round: int) -> tuple[np.ndarray, str, dict[str, Any]]:
        """Stored global model of ``run_id`` at ``round``: ``(params, spec_json, model_config)``.

        When a round was written more than once (a replay after a crash) the newest wins.

        Raises:
            KeyError: no such model row.
        """
        rows = self.read_arrow(
            "models", filters=[("run_id", "=", str(run_id)), ("round", "=", int(round))]
        ).to_pylist()
        if not rows:
            raise KeyError(f"no model for run_id={run_id!r} round={round} in {self.path('models')}")
        row = rows[-1]
        return params_from_bytes(row["params"]), row["spec"], json.loads(row["model_config"])

    def audit(
        self,
        run_id: str,
        actor: str,
        action: str,
        obj: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one row to the audit log (``details`` stored as JSON)."""
        self.append(
            "audit",
            [
                {
                    "run_id": run_id,
                    "actor": actor,
                    "action": action,
                    "object": obj,
                    "details": dict(details or {}),
                }
            ],
        )
