"""Export any ClientData to a Delta, Parquet or CSV table that TableClientData reads back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from math import prod
from typing import Any

import numpy as np

from fedlake.data.base import ClientData
from fedlake.data.table_format import _SHAPE_KEY, _SIDECAR, _check_format, _import, _is_local

__all__ = ["write_client_table"]


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
