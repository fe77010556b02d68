"""ClientData over a Delta, Parquet or CSV table with one row per example and a client id column.

Loading a client reads only that client's rows: a filter on the client column,
pushed down to the files (partition pruning when the table is partitioned by
client, row-group statistics otherwise). deltalake and pyarrow are optional
extras, imported when a table is opened or written.
"""

from __future__ import annotations

import copy
import json
import os
import zlib
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from fedlake.data.base import ClientDataset
from fedlake.data.partition import hash_split
from fedlake.data.preprocess.columns import Kind, as_categorical, as_numeric
from fedlake.data.preprocess.pipeline import FeaturePipeline
from fedlake.data.table_format import (
    _SHAPE_KEY,
    _SIDECAR,
    TABLE_FORMATS,
    _check_format,
    _import,
    _is_local,
)
from fedlake.data.table_write import write_client_table  # re-exported: always imported from here

__all__ = ["TABLE_FORMATS", "TableClientData", "write_client_table"]


def _open(path: str, format: str, client_column: str) -> tuple[Any, tuple[int, ...] | None]:
    """The pyarrow dataset of a table and its stored feature shape, if any."""
    pa, ds = _import("pyarrow"), _import("pyarrow.dataset")
    if _is_local(path) and not os.path.exists(path.removeprefix("file://")):
        raise FileNotFoundError(f"no {format} table at {path}: the path does not exist")
    if format == "delta":
        deltalake = _import("deltalake")
        try:
            table = deltalake.DeltaTable(path)
        except deltalake.exceptions.TableNotFoundError:
            raise FileNotFoundError(
                f"no Delta table at {path} (no _delta_log); for plain files use "
                "format='parquet' or format='csv'"
            ) from None
        meta = _loads(table.metadata().description)
        return table.to_pyarrow_dataset(), meta
    key = pa.schema([pa.field(client_column, pa.string())])
    kind: Any = format
    if format == "csv":  # an empty text field is a missing value, as it is for numbers
        options = _import("pyarrow.csv").ConvertOptions(strings_can_be_null=True)
        kind = ds.CsvFileFormat(convert_options=options)
    try:  # keep client ids such as "007" as strings when the table is partitioned by client
        data = ds.dataset(path, format=kind, partitioning=ds.HivePartitioning.discover(schema=key))
    except pa.ArrowInvalid:
        data = ds.dataset(path, format=kind, partitioning="hive")
    meta = _loads((data.schema.metadata or {}).get(_SHAPE_KEY.encode(), b"null"), bare=True)
    sidecar = os.path.join(path, _SIDECAR)
    if meta is None and format == "csv" and os.path.isfile(sidecar):
        with open(sidecar) as f:
            meta = _loads(f.read())
    return data, meta


def _loads(text: str | bytes | None, *, bare: bool = False) -> tuple[int, ...] | None:
    """A feature shape from stored JSON (``{"fedlake.feature_shape": [...]}`` or a bare list)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if not bare:
        value = value.get(_SHAPE_KEY) if isinstance(value, dict) else None
    return tuple(int(s) for s in value) if isinstance(value, list) else None


class TableClientData:
    """ClientData over a table of ``client_id``, ``label``, feature and optional ``split`` columns.

    Features are either scalar columns or one list column holding a flattened
    vector; ``feature_shape`` (or the shape stored by :func:`write_client_table`)
    reshapes each row. Without a split column, each row goes to test when a
    hash of its contents falls below ``test_fraction`` (deterministic,
    independent of row order).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: str = "delta",
        client_column: str = "client_id",
        label_column: str = "label",
        feature_columns: Sequence[str] | None = None,
        split_column: str | None = "split",
        feature_shape: Sequence[int] | None = None,
        test_fraction: float = 0.2,
        categorical: Sequence[str] = (),
        pipeline: FeaturePipeline | None = None,
    ) -> None:
        _check_format(format)
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        self.path, self.format = os.fspath(path), format
        self.client_column, self.label_column = client_column, label_column
        self.test_fraction = float(test_fraction)
        data, stored = self._dataset()
        schema = data.schema
        names = list(schema.names)
        for role, col in (("client_column", client_column), ("label_column", label_column)):
            if col not in names:
                raise ValueError(
                    f"{role} {col!r} is not in the table at {self.path}; "
                    f"columns: {', '.join(names)}"
                )
        self.split_column = split_column if split_column in names else None
        reserved = {client_column, label_column, self.split_column}
        if feature_columns is None:
            feature_columns = [c for c in names if c not in reserved]
        missing = [c for c in feature_columns if c not in names]
        if missing or not feature_columns:
            raise ValueError(
                f"feature columns {missing or '[]'} not usable in the table at "
                f"{self.path}; columns: {', '.join(names)}"
            )
        self.feature_columns = tuple(feature_columns)
        lists = [c for c in self.feature_columns if _is_list(schema.field(c).type)]
        if lists and len(self.feature_columns) > 1:
            raise ValueError(
                f"list feature column {lists[0]!r} must be the only feature column (a list "
                "holds a whole feature vector and cannot be mixed with scalar columns; "
                f"leave it out of data.feature_columns), got {list(self.feature_columns)}"
            )
        shape = feature_shape if feature_shape is not None else stored
        if shape is not None and (not shape or any(int(s) < 1 for s in shape)):
            raise ValueError(f"feature_shape must be positive integers, got {feature_shape}")
        self.feature_shape = None if shape is None else tuple(int(s) for s in shape)
        self.stored_shape = stored is not None  # written by write_client_table: model-ready
        unknown = sorted(set(categorical) - set(self.feature_columns))
        if unknown:
            raise ValueError(
                f"categorical columns {unknown} are not feature columns; "
                f"features: {', '.join(self.feature_columns)}"
            )
        self.categorical = tuple(categorical)
        self.kinds: dict[str, Kind] = {}
        if not lists:
            for c in self.feature_columns:
                self.kinds[c] = _kind(schema.field(c).type, c, forced=c in self.categorical)
        self.pipeline = pipeline
        if pipeline is not None:
            self._check_pipeline(pipeline)
        self._ids: list[str] | None = None

    @property
    def has_lists(self) -> bool:
        """Whether the features are one list column (a flattened vector per row)."""
        return not self.kinds

    def input_types(self) -> dict[str, str]:
        """Each scalar feature column's type as the table holds it (the served signature's)."""
        pa = _import("pyarrow")
        t = pa.types
        data, _ = self._dataset()
        out = {}
        for c in self.kinds:
            kind = data.schema.field(c).type
            if t.is_dictionary(kind):
                kind = kind.value_type
            if t.is_boolean(kind):
                out[c] = "boolean"
            elif t.is_integer(kind):
                out[c] = "long"
            elif t.is_floating(kind) or t.is_decimal(kind):
                out[c] = "double"
            else:
                out[c] = "string"
        return out

    def needs_preprocessing(self) -> bool:
        """Whether a column holds categories (text, bools) or the table has null features."""
        return any(k == "categorical" for k in self.kinds.values())

    def with_pipeline(self, pipeline: FeaturePipeline | None) -> TableClientData:
        """The same table whose rows go through ``pipeline`` when loaded."""
        if pipeline is not None:
            self._check_pipeline(pipeline)
        out = copy.copy(self)
        out.__dict__.pop("_cache", None)
        out.pipeline = pipeline
        return out

    def _check_pipeline(self, pipeline: FeaturePipeline) -> None:
        if self.has_lists:
            raise ValueError("preprocessing applies to scalar feature columns, not a list column")
        if self.feature_shape is not None and prod(self.feature_shape) != pipeline.width:
            raise ValueError(
                f"feature_shape {self.feature_shape} does not fit the pipeline's "
                f"{pipeline.width} features"
            )
        missing = sorted(set(pipeline.input_columns) - set(self.feature_columns))
        if missing:
            raise ValueError(f"the pipeline reads columns {missing} the table does not have")

    def _dataset(self) -> tuple[Any, tuple[int, ...] | None]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = self.__dict__["_cache"] = _open(self.path, self.format, self.client_column)
        return cache

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cache", None)  # pyarrow/delta handles stay behind; reopened on first use
        return state

    def client_ids(self) -> list[str]:
        """Distinct client ids, sorted (from partition values when partitioned by client)."""
        if self._ids is None:
            pc = _import("pyarrow.compute")
            data, _ = self._dataset()
            keys = _partition_values(data, self.client_column)
            if keys is None:
                column = data.to_table(columns=[self.client_column]).column(self.client_column)
                keys = pc.unique(column.drop_null()).to_pylist()
            self._ids = sorted({str(k) for k in keys})
        return list(self._ids)

    def _read(self, client_id: str) -> Any:
        """One client's rows (label, features, split) as a pyarrow table."""
        pa, pc = _import("pyarrow"), _import("pyarrow.compute")
        data, _ = self._dataset()
        kind = data.schema.field(self.client_column).type
        try:
            value = pa.scalar(str(client_id)).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise KeyError(f"unknown client id {client_id!r} in the table at {self.path}") from None
        columns = [self.label_column, *self.feature_columns]
        columns += [self.split_column] if self.split_column else []
        table = data.to_table(columns=columns, filter=pc.field(self.client_column) == value)
        if table.num_rows == 0:
            raise KeyError(f"unknown client id {client_id!r} in the table at {self.path}")
        return table

    def _test_mask(self, table: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.split_column:
            split = np.asarray(table.column(self.split_column).to_pylist(), dtype=object)
            bad = set(split.tolist()) - {"train", "test"}
            if bad:
                raise ValueError(
                    f"split column {self.split_column!r} must hold 'train' or "
                    f"'test', got {sorted(map(str, bad))[:3]}"
                )
            return np.asarray(split == "test")
        return hash_split(x, y, test_fraction=self.test_fraction)

    def _raw(self, table: Any) -> dict[str, np.ndarray]:
        """The feature columns as float64 (NaN missing) or category strings (None missing)."""
        out = {}
        for c in self.feature_columns:
            values = table.column(c).to_pylist()
            if self.kinds[c] == "numeric":
                out[c] = as_numeric(np.asarray(values, dtype=object), name=c)
            else:
                out[c] = as_categorical(values)
        return out

    def _raw_split(self, client_id: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        table = self._read(client_id)
        y = _numbers(table.column(self.label_column), self.label_column).astype(np.int64)
        raw = self._raw(table)
        test = self._test_mask(table, _row_keys(raw, len(y)), y)
        return raw, y, test

    def raw_columns(self, client_id: str) -> dict[str, np.ndarray]:
        """The raw feature columns of one client's training rows (what its summary reads)."""
        if self.has_lists:
            raise ValueError("raw columns are for scalar feature columns, not a list column")
        raw, _, test = self._raw_split(client_id)
        return {c: v[~test] for c, v in raw.items()}

    def load(self, client_id: str) -> ClientDataset:
        """Read one client's rows and split them into train and test."""
        if self.pipeline is not None:
            raw, y, test = self._raw_split(client_id)
            x = self._shaped(self.pipeline.transform(raw, rows=len(y)))
            return ClientDataset(x[~test], y[~test], x[test], y[test])
        table = self._read(client_id)
        y = _numbers(table.column(self.label_column), self.label_column).astype(np.int64)
        x = self._features(table)
        test = self._test_mask(table, x, y)
        return ClientDataset(x[~test], y[~test], x[test], y[test])

    def _features(self, table: Any) -> np.ndarray:
        n = table.num_rows
        first = table.column(self.feature_columns[0])
        if _is_list(first.type):
            chunk = first.combine_chunks()
            if chunk.null_count:
                raise ValueError(f"feature column {self.feature_columns[0]!r} has null rows")
            lengths = _numbers(_import("pyarrow.compute").list_value_length(chunk), "length")
            if n and lengths.min() != lengths.max():
                raise ValueError(f"list column {self.feature_columns[0]!r} has unequal lengths")
            x = _numbers(chunk.flatten(), self.feature_columns[0]).reshape(n, -1)
        else:
            x = np.stack([_numbers(table.column(c), c) for c in self.feature_columns], axis=1)
        return self._shaped(x.astype(np.float32, copy=False))

    def _shaped(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.feature_shape is not None:
            if prod(self.feature_shape) != x.shape[1]:
                raise ValueError(
                    f"feature_shape {self.feature_shape} does not fit {x.shape[1]} features per row"
                )
            x = x.reshape((n, *self.feature_shape))
        return x

    def __repr__(self) -> str:
        return f"TableClientData({self.path!r}, format={self.format!r})"


def _is_list(kind: Any) -> bool:
    pa = _import("pyarrow")
    return bool(
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


def _kind(kind: Any, name: str, *, forced: bool) -> Kind:
    """How a scalar column is read: numbers or categories; refuses columns it cannot use."""
    pa = _import("pyarrow")
    t = pa.types
    if t.is_null(kind):
        raise ValueError(
            f"column {name!r} is entirely null; fill it or leave it out of the features"
        )
    if t.is_temporal(kind):
        raise ValueError(
            f"column {name!r} holds dates or times ({kind}); convert it to a number, "
            "e.g. days since 2000-01-01 or days since the member joined"
        )
    if t.is_dictionary(kind) or t.is_string(kind) or t.is_large_string(kind) or t.is_boolean(kind):
        return "categorical"
    if t.is_integer(kind) or t.is_floating(kind) or t.is_decimal(kind):
        return "categorical" if forced else "numeric"
    raise ValueError(
        f"column {name!r} of type {kind} cannot be used as a feature; "
        "features are numbers, text/bool categories, or one list column of numbers"
    )


def _row_keys(raw: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Each row's raw values as float32 (categories by CRC32, missing as -0.5) for the split.

    A table of plain numbers hashes exactly as its unprocessed rows do, so preprocessing
    does not move rows between train and test.
    """
    cols = []
    for values in raw.values():
        if values.dtype == object:
            values = np.array(
                [-0.5 if v is None else float(zlib.crc32(v.encode("utf-8"))) for v in values]
            )
        cols.append(np.where(np.isnan(values), -0.5, values))
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)


def _numbers(column: Any, name: str) -> np.ndarray:
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null values")
    values = np.asarray(column.to_numpy())
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"column {name!r} must hold numbers, got {column.type} "
            f"(e.g. {values[:1].tolist()}); encode categories as numbers or drop the column"
        )
    return values


def _partition_values(data: Any, column: str) -> list[Any] | None:
    """Client ids from partition paths without reading data, or None if not partitioned so."""
    ds = _import("pyarrow.dataset")
    keys = []
    for fragment in data.get_fragments():
        found = ds.get_partition_keys(fragment.partition_expression)
        if column not in found:
            return None
        keys.append(found[column])
    return keys
