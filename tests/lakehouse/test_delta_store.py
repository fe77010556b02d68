"""DeltaStore: exact schemas, nulls, commit-conflict retries and concurrent spawn writers."""

import json
import multiprocessing as mp
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from fedlake.lakehouse import delta_store
from fedlake.lakehouse.delta_store import CommitConflictError, DeltaStore
from fedlake.lakehouse.schemas import table_schema
from fedlake.orchestration.interfaces import TABLES, Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def full_rows():
    """One complete row per table (every column set)."""
    params = np.linspace(-1, 1, 7, dtype=np.float32)
    return {
        "models": {
            "run_id": "run1",
            "round": 3,
            "params": params,
            "spec": json.dumps([["w", [7], "float32"]]),
            "model_config": {"kind": "logreg", "input_shape": [7], "num_classes": 2},
            "metrics": {"accuracy": 0.75, "examples": np.int64(40)},
            "accuracy": 0.75,
            "loss": 0.5,
            "created_at": T0,
        },
        "rounds": {
            "run_id": "run1",
            "round": 3,
            "attempt": 1,
            "status": "completed",
            "cohort": ["c1", "c2", "c3"],
            "num_sampled": 3,
            "num_completed": 1,
            "num_dropped": 1,
            "num_failed": 0,
            "num_rejected": 1,
            "train_loss": 0.9,
            "eval_loss": 0.8,
            "eval_accuracy": 0.7,
            "bytes_up": 123,
            "bytes_down": np.int64(456),
            "duration_s": 1.25,
            "metrics": "{}",
            "created_at": T0,
        },
        "client_updates": {
            "run_id": "run1",
            "round": 3,
            "attempt": 1,
            "client_id": "c2",
            "status": "rejected",
            "reason": "non-finite update",
            "num_examples": 17,
            "update_norm": np.float32(2.5),
            "bytes": 28,
            "train_loss": 0.4,
            "duration_s": 0.01,
            "created_at": T0,
        },
        "audit": {
            "time": T0,
            "run_id": "run1",
            "actor": "tester",
            "action": "run.start",
            "object": "demo",
            "details": {"seed": 0, "tags": ("a", "b")},
        },
    }


@pytest.fixture
def store(tmp_path):
    return DeltaStore(tmp_path / "lake", catalog="main", schema="fl", backoff_s=0.001)


def test_is_a_store_with_uc_names_and_paths(store, tmp_path):
    assert isinstance(store, Store)
    assert store.table_name("rounds").full_name == "main.fl.rounds"
    assert store.path("audit") == tmp_path / "lake" / "main" / "fl" / "audit"
    with pytest.raises(ValueError, match="unknown table 'metrics'; the lakehouse tables are"):
        store.path("metrics")


def test_read_before_first_append_is_empty(store):
    for table in TABLES:
        assert store.read(table) == []
        assert not store.exists(table)
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        store.read("nope")


@pytest.mark.parametrize("table", TABLES)
def test_round_trip_with_the_exact_schema(store, table):
    row = full_rows()[table]
    store.append(table, [row])
    dt = DeltaTable(str(store.path(table)))
    on_disk = dt.to_pyarrow_table().schema
    assert on_disk.names == table_schema(table).names
    for field in table_schema(table):
        assert on_disk.field(field.name).type == field.type, field.name
    assert store.read_arrow(table).schema.equals(table_schema(table))
    (back,) = store.read(table)
    assert set(back) == set(table_schema(table).names)
    for key in ("run_id", "round", "status", "client_id", "reason", "bytes", "action"):
        if key in row:
            assert back[key] == row[key]
    time_key = "time" if table == "audit" else "created_at"
    assert back[time_key] == T0


def test_values_are_converted_as_documented(store):
    rows = full_rows()
    for table in TABLES:
        store.append(table, [rows[table]])
    (model,) = store.read("models")
    np.testing.assert_array_equal(
        np.frombuffer(model["params"], dtype="<f4"), rows["models"]["params"]
    )
    assert json.loads(model["metrics"]) == {"accuracy": 0.75, "examples": 40}
    (rnd,) = store.read("rounds")
    assert json.loads(rnd["cohort"]) == ["c1", "c2", "c3"] and rnd["bytes_down"] == 456
    assert store.read("client_updates")[0]["update_norm"] == 2.5
    assert json.loads(store.read("audit")[0]["details"]) == {"seed": 0, "tags": ["a", "b"]}


def test_missing_nullable_fields_become_null_and_times_default_to_now(store):
    before = datetime.now(UTC)
    store.append(
        "client_updates",
        [
            {
                "run_id": "r",
                "round": 1,
                "attempt": 0,
                "client_id": "c9",
                "status": "dropped",
                "num_examples": 0,
                "bytes": 0,
            }
        ],
    )
    (row,) = store.read("client_updates")
    assert row["reason"] is None and row["update_norm"] is None
    assert row["train_loss"] is None and row["duration_s"] is None
    assert before - timedelta(seconds=1) <= row["created_at"] <= datetime.now(UTC)
    model = {k: v for k, v in full_rows()["models"].items() if k not in ("accuracy", "loss")}
    store.append("models", [model])
    assert store.read("models")[0]["accuracy"] is None


def test_bad_rows_fail_before_writing(store):
    row = dict(full_rows()["rounds"])
    with pytest.raises(ValueError, match="rounds row 0: unknown columns colour"):
        store.append("rounds", [{**row, "colour": "red"}])
    with pytest.raises(ValueError, match="rounds row 1: column 'bytes_up' is required"):
        store.append("rounds", [row, {**row, "bytes_up": None}])
    with pytest.raises(ValueError, match=r"rounds\.cohort must be JSON text"):
        store.append("rounds", [{**row, "cohort": "c1,c2"}])
    bad_status = {**full_rows()["client_updates"], "status": "lost"}
    with pytest.raises(ValueError, match="status must be one of accepted, rejected, dropped"):
        store.append("client_updates", [bad_status])
    assert not store.exists("rounds") and not store.exists("client_updates")
    store.append("rounds", [])  # nothing to write: no table either
    assert not store.exists("rounds")


def test_rows_read_back_in_commit_order(store):
    for i in range(4):
        store.audit("r", "tester", f"step{i}", "obj", {"i": i})
    assert [r["action"] for r in store.read("audit")] == ["step0", "step1", "step2", "step3"]
    assert json.loads(store.read("audit")[2]["details"]) == {"i": 2}


def test_read_models_params_returns_the_newest_copy(store):
    row = full_rows()["models"]
    store.append("models", [row, {**row, "round": 4, "params": np.zeros(7, np.float32)}])
    replay = {**row, "params": np.full(7, 2.0, np.float32), "created_at": T0 + timedelta(1)}
    store.append("models", [replay])
    params, spec, config = store.read_models_params("run1", 3)
    assert params.dtype == np.float32 and params.flags.writeable
    np.testing.assert_array_equal(params, np.full(7, 2.0, np.float32))
    assert json.loads(spec) == [["w", [7], "float32"]]
    assert config == {"kind": "logreg", "input_shape": [7], "num_classes": 2}
    with pytest.raises(KeyError, match="no model for run_id='run1' round=9"):
        store.read_models_params("run1", 9)


def flaky_writer(monkeypatch, failures, error=None):
    """Make the first ``failures`` commits raise ``error`` (a commit conflict by default)."""
    real = delta_store._write_delta
    calls = []

    def write(path, data):
        calls.append(path)
        if len(calls) <= failures:
            raise error or CommitFailedError("Failed to commit transaction: version 0 conflict")
        real(path, data)

    monkeypatch.setattr(delta_store, "_write_delta", write)
    return calls


def test_retries_commit_conflicts_then_succeeds(store, monkeypatch):
    calls = flaky_writer(monkeypatch, failures=2)
    store.append("rounds", [full_rows()["rounds"]])
    assert len(calls) == 3
    assert len(store.read("rounds")) == 1


def test_retries_concurrent_table_creation(store, monkeypatch):
    calls = flaky_writer(
        monkeypatch, 1, DeltaError("Delta transaction failed, version 0 already exists.")
    )
    store.audit("r", "a", "b", "c")
    assert len(calls) == 2 and len(store.read("audit")) == 1


def test_gives_up_after_max_retries_with_a_clear_error(tmp_path, monkeypatch):
    store = DeltaStore(tmp_path, max_retries=3, backoff_s=0.001)
    calls = flaky_writer(monkeypatch, failures=100)
    with pytest.raises(CommitConflictError, match="fedlake.default.rounds .* after 3 retries"):
        store.append("rounds", [full_rows()["rounds"]])
    assert len(calls) == 4
    assert store.read("rounds") == []


def test_other_errors_are_not_retried(store, monkeypatch):
    calls = flaky_writer(monkeypatch, 5, DeltaError("Generic DeltaTable error: disk full"))
    with pytest.raises(DeltaError, match="disk full"):
        store.audit("r", "a", "b", "c")
    assert len(calls) == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap(tmp_path):
    store = DeltaStore(tmp_path, backoff_s=0.1, max_backoff_s=1.0)
    waits = [store._backoff(a) for a in range(8)]
    assert 0.05 <= waits[0] <= 0.15 and 0.2 <= waits[2] <= 0.6
    assert all(0.5 <= w <= 1.5 for w in waits[4:])
    with pytest.raises(ValueError, match="max_retries must be >= 0, got -1"):
        DeltaStore(tmp_path, max_retries=-1)
    with pytest.raises(ValueError, match="invalid catalog name 'my-cat'"):
        DeltaStore(tmp_path, catalog="my-cat")


def test_schema_drift_is_reported_not_retried(store):
    path = str(store.path("audit"))
    odd = pa.table({"time": pa.array([T0]), "note": pa.array(["x"])})
    from deltalake import write_deltalake

    write_deltalake(path, odd)
    with pytest.raises(DeltaError):
        store.audit("r", "a", "b", "c")


def test_concurrent_spawn_processes_append_every_row(store):
    rows = full_rows()["rounds"]
    tasks = [
        (store, "rounds", [{**rows, "run_id": f"w{w}", "round": i, "attempt": k} for k in range(3)])
        for w in range(4)
        for i in range(4)
    ]
    with mp.get_context("spawn").Pool(4) as pool:  # never fork: delta-rs panics in forked children
        pool.starmap(DeltaStore.append, tasks)
    got = sorted((r["run_id"], r["round"], r["attempt"]) for r in store.read("rounds"))
    assert got == sorted((f"w{w}", i, k) for w in range(4) for i in range(4) for k in range(3))
    assert DeltaTable(str(store.path("rounds"))).version() == len(tasks) - 1


def test_a_rounds_table_from_before_the_privacy_columns_takes_them(store):
    from deltalake import write_deltalake

    from fedlake.lakehouse.schemas import to_arrow

    row = full_rows()["rounds"]
    full = to_arrow("rounds", [row])
    old = full.drop_columns(["epsilon", "delta"])  # what older fedlake versions wrote
    path = str(store.path("rounds"))
    write_deltalake(path, old)
    store.append("rounds", [{**row, "epsilon": 1.5, "delta": 1e-5}])
    got = {(r["epsilon"], r["delta"]) for r in store.read("rounds")}  # same created_at
    assert got == {(None, None), (1.5, 1e-5)}
