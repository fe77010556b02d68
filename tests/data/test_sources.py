"""Client tables (Delta, Parquet, CSV): round trips, pruning, hash splits and errors."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedlake.data.activity import ActivityPopulation
from fedlake.data.base import ClientData
from fedlake.data.partition import partition_dataset
from fedlake.data.sources import TableClientData, write_client_table
from fedlake.data.synthetic import fedprox_synthetic

FORMATS = ["delta", "parquet", "csv"]


def _assert_same(a: ClientData, b: ClientData) -> None:
    assert list(a.client_ids()) == list(b.client_ids())
    for cid in a.client_ids():
        da, db = a.load(cid), b.load(cid)
        for field in ("x_train", "y_train", "x_test", "y_test"):
            xa, xb = getattr(da, field), getattr(db, field)
            assert xa.dtype == xb.dtype and xa.shape == xb.shape, (cid, field)
            np.testing.assert_array_equal(xa, xb)


@pytest.fixture(scope="module")
def vectors():
    return fedprox_synthetic(1, 1, num_devices=4, seed=0)


@pytest.fixture(scope="module")
def windows():
    return ActivityPopulation(3, seed=1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_vectors(tmp_path, vectors, fmt):
    write_client_table(vectors, tmp_path / "t", format=fmt)
    table = TableClientData(tmp_path / "t", format=fmt)
    assert isinstance(table, ClientData)
    _assert_same(vectors, table)
    _assert_same(vectors, pickle.loads(pickle.dumps(table)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_windows_keeps_their_shape(tmp_path, windows, fmt):
    write_client_table(windows, tmp_path / "t", format=fmt)
    table = TableClientData(str(tmp_path / "t"), format=fmt)
    assert table.feature_shape == (4, 128)
    _assert_same(windows, table)


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_round_trip_unpartitioned(tmp_path, vectors, fmt):
    write_client_table(vectors, tmp_path / "t", format=fmt, partition_by_client=False)
    _assert_same(vectors, TableClientData(tmp_path / "t", format=fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_reads_only_that_clients_files(tmp_path, vectors, fmt):
    write_client_table(vectors, tmp_path / "t", format=fmt)
    (victim,) = [p for p in (tmp_path / "t" / "client_id=device-001").iterdir() if p.is_file()]
    victim.write_bytes(b"this is not a data file")
    table = TableClientData(tmp_path / "t", format=fmt)
    assert table.client_ids() == [f"device-{k:03d}" for k in range(4)]
    np.testing.assert_array_equal(
        table.load("device-002").y_test, vectors.load("device-002").y_test
    )
    with pytest.raises(Exception):  # noqa: B017 - the corrupt file is read only for its client
        table.load("device-001")


def test_numeric_looking_ids_stay_strings(tmp_path):
    data = partition_dataset(
        np.ones((6, 2)), np.arange(6) % 2, scheme="by_column", groups=["007", "010"] * 3
    )
    write_client_table(data, tmp_path / "t", format="parquet")
    table = TableClientData(tmp_path / "t", format="parquet")
    assert table.client_ids() == ["007", "010"]
    _assert_same(data, table)


def _plain_table(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user": np.repeat(["a", "b"], n // 2),
            "age": rng.normal(size=n),
            "height": rng.normal(size=n),
            "note": rng.normal(size=n),
            "y": rng.integers(0, 3, n),
        }
    )


def test_hash_split_without_split_column_is_deterministic_and_order_free(tmp_path):
    t = _plain_table()
    pq.write_table(t, tmp_path / "a.parquet")
    pq.write_table(t.take(np.random.default_rng(1).permutation(len(t))), tmp_path / "b.parquet")
    kw = {"format": "parquet", "client_column": "user", "label_column": "y", "test_fraction": 0.25}
    a, b = (
        TableClientData(tmp_path / "a.parquet", **kw),
        TableClientData(tmp_path / "b.parquet", **kw),
    )
    assert a.split_column is None and a.feature_columns == ("age", "height", "note")
    for cid in ("a", "b"):
        da, db = a.load(cid), b.load(cid)
        assert da.x_train.shape == (da.num_train, 3) and da.y_train.dtype == np.int64
        assert 0.15 < da.num_test / 200 < 0.35
        assert sorted(map(tuple, da.x_test.tolist())) == sorted(map(tuple, db.x_test.tolist()))
        assert sorted(map(tuple, da.x_train.tolist())) == sorted(map(tuple, db.x_train.tolist()))


def test_selected_scalar_columns_with_a_feature_shape(tmp_path):
    pq.write_table(_plain_table(), tmp_path / "t.parquet")
    table = TableClientData(
        tmp_path / "t.parquet",
        format="parquet",
        client_column="user",
        label_column="y",
        feature_columns=["height", "age"],
        feature_shape=(2, 1),
    )
    d = table.load("b")
    assert d.x_train.shape == (d.num_train, 2, 1) and d.x_train.dtype == np.float32
    raw = _plain_table().to_pandas().query("user == 'b'")
    assert set(d.x_train[:, 0, 0].tolist()) <= set(raw["height"].astype(np.float32).tolist())


def test_a_tiny_client_keeps_a_training_row(tmp_path):
    t = pa.table({"client_id": ["x"], "label": [1], "f": [0.5]})
    pq.write_table(t, tmp_path / "t.parquet")
    d = TableClientData(tmp_path / "t.parquet", format="parquet", test_fraction=0.99).load("x")
    assert d.num_train == 1 and d.num_test == 0


def test_errors(tmp_path, vectors):
    with pytest.raises(FileNotFoundError, match="no delta table at .*does not exist"):
        TableClientData(tmp_path / "missing")
    write_client_table(vectors, tmp_path / "p", format="parquet")
    with pytest.raises(FileNotFoundError, match="no Delta table at .*format='parquet'"):
        TableClientData(tmp_path / "p", format="delta")
    with pytest.raises(ValueError, match="label_column 'target' is not in the table"):
        TableClientData(tmp_path / "p", format="parquet", label_column="target")
    with pytest.raises(ValueError, match=r"feature columns \['pixels'\] not usable"):
        TableClientData(tmp_path / "p", format="parquet", feature_columns=["pixels"])
    with pytest.raises(ValueError, match="unknown table format 'orc'; accepted: delta"):
        TableClientData(tmp_path / "p", format="orc")
    table = TableClientData(tmp_path / "p", format="parquet")
    with pytest.raises(KeyError, match="unknown client id 'device-999'"):
        table.load("device-999")
    bad = TableClientData(tmp_path / "p", format="parquet", feature_shape=(7, 7))
    with pytest.raises(ValueError, match=r"feature_shape \(7, 7\) does not fit 60 features"):
        bad.load("device-000")
    with pytest.raises(FileExistsError, match="already exists and is not an empty folder"):
        write_client_table(vectors, tmp_path / "p", format="parquet")
    with pytest.raises(ValueError, match="unknown table format"):
        write_client_table(vectors, tmp_path / "q", format="json")


def test_overwrite(tmp_path, vectors):
    small = fedprox_synthetic(1, 1, num_devices=2, dim=3, seed=0)
    write_client_table(vectors, tmp_path / "d")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_client_table(small, tmp_path / "d")
    write_client_table(small, tmp_path / "d", overwrite=True)
    table = TableClientData(tmp_path / "d")
    assert table.feature_shape == (3,)
    _assert_same(small, table)
    with pytest.raises(ValueError, match="overwrite=True needs format='delta'"):
        write_client_table(small, tmp_path / "p", format="parquet", overwrite=True)


def test_bad_split_values(tmp_path):
    t = pa.table(
        {"client_id": ["x", "x"], "label": [0, 1], "f": [0.1, 0.2], "split": ["tr", "test"]}
    )
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="must hold 'train' or 'test', got \\['tr'\\]"):
        TableClientData(tmp_path / "t.parquet", format="parquet").load("x")


def test_missing_extra_has_an_actionable_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deltalake", None)
    with pytest.raises(ImportError, match=r"pip install 'fedlake\[lakehouse\]'"):
        TableClientData(Path(tmp_path), format="delta")


def test_importing_the_package_imports_no_extras():
    import subprocess

    code = (
        "import sys, fedlake.data; "
        "print(sorted(m for m in ('pyarrow', 'deltalake', 'sklearn') if m in sys.modules))"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": ""},
    )
    assert out.stdout.strip() == "[]"


def test_a_text_column_is_named_in_the_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label,client_id\nx,0.5,1,0\ny,0.1,0,0\n")
    table = TableClientData(path, format="csv")
    with pytest.raises(
        ValueError, match=r"column 'a' must hold numbers, got string \(e.g. \['x'\]\)"
    ):
        table.load("0")
