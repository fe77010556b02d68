"""ClientData over a Delta, Parquet or CSV table with one row per example and a client id column.

Loading a client reads only that client's rows: a filter on the client column,
pushed down to the files (partition pruning when the table is partitioned by
client, row-group statistics otherwise). deltalake and pyarrow are optional
extras, imported when a table is opened or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from math import prod
from typing import Any

import numpy as np

from fedlake.data.base import ClientData, ClientDataset
from fedlake.data.partition import hash_split

__all__ = ["TABLE_FORMATS", "TableClientData", "write_client_table"]

TABLE_FORMATS = ("delta", "parquet", "csv")
INSTALL_HINT = "pip install 'fedlake[lakehouse]'"
_SHAPE_KEY = "fedlake.feature_shape"
_SIDECAR = "_fedlake.json"  # csv only; pyarrow skips files starting with "_"


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"client tables need {name.split('.')[0]}: {INSTALL_HINT}") from err


def _check_format(format: str) -> None:
    if format not in TABLE_FORMATS:
        raise ValueError(f"unknown table format {format!r}; accepted: {', '.join(TABLE_FORMATS)}")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


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
    try:  # keep client ids such as "007" as strings when the table is partitioned by client
        data = ds.dataset(
            path, format=format, partitioning=ds.HivePartitioning.discover(schema=key)
        )
    except pa.ArrowInvalid:
        data = ds.dataset(path, format=format, partitioning="hive")
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
                f"list feature column {lists[0]!r} must be the only feature column, "
                f"got {list(self.feature_columns)}"
            )
        shape = feature_shape if feature_shape is not None else stored
        if shape is not None and (not shape or any(int(s) < 1 for s in shape)):
            raise ValueError(f"feature_shape must be positive integers, got {feature_shape}")
        self.feature_shape = None if shape is None else tuple(int(s) for s in shape)
        self._ids: list[str] | None = None

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

    def load(self, client_id: str) -> ClientDataset:
        """Read one client's rows and split them into train and test."""
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
        y = _numbers(table.column(self.label_column), self.label_column).astype(np.int64)
        x = self._features(table)
        if self.split_column:
            split = np.asarray(table.column(self.split_column).to_pylist(), dtype=object)
            bad = set(split.tolist()) - {"train", "test"}
            if bad:
                raise ValueError(
                    f"split column {self.split_column!r} must hold 'train' or "
                    f"'test', got {sorted(map(str, bad))[:3]}"
                )
            test = split == "test"
        else:
            test = hash_split(x, y, test_fraction=self.test_fraction)
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
        x = x.astype(np.float32, copy=False)
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


def write_client_table(
    data: ClientData,
    path: str | os.PathLike[str],
    *,
    format: str = "delta",
    partition_by_client: bool = True,
    overwrite: bool = False,
) -> None:
    """Export every client of ``data`` to a table readable by :class:`TableClientData`.

    Columns: ``client_id``, ``split`` ("train"/"test"), ``label`` (int64) and
    the flattened float32 features, as one list column ``features`` (delta,
    parquet) or scalar columns ``f0``, ``f1``, ... (csv). The feature shape is
    stored with the table (Delta description, Parquet schema metadata, or a
    ``_fedlake.json`` file beside the CSV files). Clients are streamed one at a
    time, so memory stays at one client.
    """
    _check_format(format)
    pa, ds = _import("pyarrow"), _import("pyarrow.dataset")
    path = os.fspath(path)
    ids = data.client_ids()
    if len(ids) == 0:
        raise ValueError("data has no clients to write")
    shape = tuple(int(s) for s in data.load(ids[0]).x_train.shape[1:])
    width = prod(shape)
    if format == "csv":
        cols = [pa.field(f"f{j}", pa.float32()) for j in range(width)]
    else:
        cols = [pa.field("features", pa.list_(pa.float32(), width))]
    head = [
        pa.field("client_id", pa.string()),
        pa.field("split", pa.string()),
        pa.field("label", pa.int64()),
    ]
    schema = pa.schema(head + cols, metadata={_SHAPE_KEY: json.dumps(list(shape))})

    def batches() -> Iterator[Any]:
        for cid in ids:
            d = data.load(cid)
            x = np.concatenate([d.x_train, d.x_test]).astype(np.float32)
            if x.shape[1:] != shape:
                raise ValueError(
                    f"client {cid!r} has feature shape {x.shape[1:]}, expected {shape}"
                )
            if len(x) == 0:
                raise ValueError(f"client {cid!r} has no examples; a table cannot hold it")
            flat = x.reshape(len(x), width)
            split = ["train"] * d.num_train + ["test"] * d.num_test
            arrays = [
                pa.array([str(cid)] * len(x)),
                pa.array(split),
                pa.array(np.concatenate([d.y_train, d.y_test]).astype(np.int64)),
            ]
            if format == "csv":
                arrays += [pa.array(flat[:, j]) for j in range(width)]
            else:
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), width))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    description = json.dumps({_SHAPE_KEY: list(shape)})
    if format == "delta":
        deltalake = _import("deltalake")
        if not overwrite and _is_local(path) and deltalake.DeltaTable.is_deltatable(path):
            raise FileExistsError(f"a Delta table already exists at {path}; pass overwrite=True")
        deltalake.write_deltalake(
            path,
            reader,
            partition_by=["client_id"] if partition_by_client else None,
            mode="overwrite" if overwrite else "error",
            schema_mode="overwrite" if overwrite else None,
            description=description,
        )
        table = deltalake.DeltaTable(path)
        if table.metadata().description != description:  # an overwrite keeps the old one
            table.alter.set_table_description(description)
        return
    if overwrite:
        raise ValueError(
            f"overwrite=True needs format='delta' (a transactional overwrite); "
            f"remove {path} before writing {format}"
        )
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise FileExistsError(f"{path} already exists and is not an empty folder")
    partitioning = None
    if partition_by_client:
        partitioning = ds.partitioning(pa.schema([head[0]]), flavor="hive")
    ds.write_dataset(
        reader,
        path,
        format=format,
        partitioning=partitioning,
        max_partitions=2**31 - 1,
        existing_data_behavior="overwrite_or_ignore",
        preserve_order=True,
    )
    if format == "csv":
        with open(os.path.join(path, _SIDECAR), "w") as f:
            f.write(description)
