"""Scalar table columns as the preprocessing sees them: kinds, refusals, raw rows, pipelines."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedlake.data.preprocess import fit_federated
from fedlake.data.sources import TableClientData


def table(tmp_path, name="t", **columns):
    n = len(next(iter(columns.values())))
    data = {"client_id": ["a", "b"] * (n // 2), "label": [0, 1] * (n // 2), **columns}
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table(data), path)
    return path


def test_kinds_follow_the_column_types(tmp_path):
    path = table(
        tmp_path,
        age=[30, 40, None, 50],
        fee=[29.0, 49.5, 89.0, None],
        plan=["basic", None, "plus", "basic"],
        member=[True, False, True, None],
        zip=[10001, 10002, 10001, 10003],
    )
    t = TableClientData(path, format="parquet", categorical=["zip"])
    assert t.kinds == {
        "age": "numeric",
        "fee": "numeric",
        "plan": "categorical",
        "member": "categorical",
        "zip": "categorical",
    }
    assert t.needs_preprocessing()
    assert t.input_types() == {
        "age": "long",
        "fee": "double",
        "plan": "string",
        "member": "boolean",
        "zip": "long",
    }
    rows = TableClientData(path, format="parquet", categorical=["zip"], test_fraction=0.0)
    raw = rows.raw_columns("a")  # rows 0 and 2
    assert raw["zip"].tolist() == ["10001", "10001"]  # a category, not 10001.0
    assert raw["plan"].tolist() == ["basic", "plus"] and raw["member"].tolist() == ["true"] * 2
    assert raw["age"][0] == 30 and np.isnan(raw["age"][1])


def test_unusable_columns_are_refused_with_why(tmp_path):
    dates = table(tmp_path, joined=[dt.date(2024, 1, d) for d in (1, 2, 3, 4)])
    with pytest.raises(ValueError, match=r"'joined' holds dates or times.*days since"):
        TableClientData(dates, format="parquet")
    nulls = table(tmp_path, empty=pa.nulls(4))
    with pytest.raises(ValueError, match="'empty' is entirely null"):
        TableClientData(nulls, format="parquet")
    nested = table(tmp_path, tags=pa.array([{"x": 1}] * 4))
    with pytest.raises(ValueError, match="of type struct.*cannot be used as a feature"):
        TableClientData(nested, format="parquet")
    ok = table(tmp_path, age=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"categorical columns \['plan'\] are not feature columns"):
        TableClientData(ok, format="parquet", categorical=["plan"])


def test_raw_columns_are_the_training_rows_only(tmp_path):
    n = 200
    path = table(tmp_path, x=np.arange(n, dtype=np.float64))
    t = TableClientData(path, format="parquet", split_column=None, test_fraction=0.3)
    raw = t.raw_columns("a")["x"]
    loaded = t.load("a")
    assert len(raw) == len(loaded.y_train) < n // 2
    np.testing.assert_array_equal(np.sort(raw), np.sort(loaded.x_train[:, 0]))


def test_a_pipeline_is_applied_on_load_and_keeps_the_split(tmp_path):
    n = 200
    rng = np.random.default_rng(0)
    ages = rng.normal(40, 10, n).round()
    path = table(tmp_path, age=ages, plan=rng.choice(["basic", "plus"], n).tolist())
    t = TableClientData(path, format="parquet", split_column=None)
    pipe = fit_federated(t)
    prepared = t.with_pipeline(pipe)
    assert t.pipeline is None and prepared.pipeline is pipe
    numbers = TableClientData(
        table(tmp_path, "numbers", age=ages), format="parquet", split_column=None
    )
    scaled = numbers.with_pipeline(fit_federated(numbers))
    for cid in t.client_ids():
        a = prepared.load(cid)
        assert a.x_train.shape[1] == pipe.width and a.x_train.dtype == np.float32
        # preprocessing moves no row between train and test: the split hashes raw values
        raw, done = numbers.load(cid), scaled.load(cid)
        np.testing.assert_array_equal(raw.y_test, done.y_test)
        mean, scale = scaled.pipeline.columns[0].mean, scaled.pipeline.columns[0].scale
        np.testing.assert_allclose(done.x_test[:, 0], (raw.x_test[:, 0] - mean) / scale, rtol=1e-5)
    with pytest.raises(ValueError, match="does not fit the pipeline's"):
        TableClientData(path, format="parquet", feature_shape=(3,), pipeline=pipe)
