"""Rounds on local Spark: the same model as the inline and process executors, folding in
the tasks with tree aggregation, and a lost task costing only its own clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedlake.backends.spark import SparkExecutor
from fedlake.config import parse_config
from fedlake.core.task import ClientFailure, ClientReply, FailureReason
from fedlake.run import run_experiment
from fedlake.testing.conformance import toy_fleet, toy_task
from tests.spark.killer import KILLER, killer_fleet

CONFIG = {
    "name": "spark-equivalence",
    "seed": 3,
    "data": {"scenario": "digits", "num_clients": 8, "partition": "dirichlet", "alpha": 0.5},
    "model": {"kind": "logreg"},
    "algorithm": {"name": "fedavg", "client_lr": 0.1, "local_epochs": 1, "batch_size": 16},
    "federation": {"rounds": 3, "clients_per_round": 5},
    "lakehouse": {"delta": False, "mlflow": False},
}


def _model(tmp_path: Path, executor: dict[str, Any]) -> np.ndarray:
    raw = {**CONFIG, "output_dir": str(tmp_path / executor["kind"]), "executor": executor}
    return np.array(run_experiment(parse_config(raw)).result.state.params)


def test_inline_process_and_spark_give_the_same_model(spark: Any, tmp_path: Path) -> None:
    inline = _model(tmp_path, {"kind": "inline", "vectorize": False})
    on_spark = _model(tmp_path, {"kind": "spark", "workers": 2})
    process = _model(tmp_path, {"kind": "process", "workers": 2})
    # one client at a time everywhere and aggregation in cohort order: bit for bit
    assert on_spark.tobytes() == inline.tobytes() == process.tobytes()
    vectorised = _model(tmp_path / "v", {"kind": "inline", "vectorize": True})
    np.testing.assert_allclose(on_spark, vectorised, rtol=1e-4, atol=1e-5)


def test_folding_in_the_tasks_matches_to_float_tolerance(spark: Any, tmp_path: Path) -> None:
    from fedlake.orchestration.folding import FoldPlan, merge_folded

    fleet = toy_fleet(clients=10)
    cohort = [f"c{i}" for i in range(10)]
    task = toy_task(fleet)
    plan = FoldPlan(dim=fleet.trainer.spec.size, sent=None)
    plain = SparkExecutor(fleet, _store(), spark=spark, partitions=4)
    folding = SparkExecutor(fleet, _store(), spark=spark, partitions=4, fold=True)
    try:
        replies = list(plain.map_clients(task, cohort))
        parts = folding.fold_clients(task, cohort, plan)
    finally:
        plain.close()
        folding.close()
    assert len(parts) == 1  # one fold reaches the driver, whatever the partitions
    total = merge_folded(parts, fleet.algorithm, plan, cohort)
    assert total.count == 10 and [r.client_id for r in total.records] == cohort
    expected = _mean_delta(replies, fleet, plan)
    got = total.accumulators["delta"].total / total.accumulators["delta"].weight
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_a_lost_task_drops_only_its_own_clients(spark: Any) -> None:
    fleet = killer_fleet()
    cohort = ["c0", "c1", "c2", "c3", KILLER, "c5"]
    executor = SparkExecutor(fleet, _store(), spark=spark, partitions=3)
    try:
        out = {o.client_id: o for o in executor.map_clients(toy_task(fleet), cohort)}
    finally:
        executor.close()
    assert sorted(out) == sorted(cohort)
    # partitions take every third client: KILLER (index 4) shares its task with c1
    lost = {c for c, o in out.items() if isinstance(o, ClientFailure)}
    assert lost == {"c1", KILLER}
    assert all(out[c].reason is FailureReason.LOST for c in lost)  # type: ignore[union-attr]
    assert all(isinstance(out[c], ClientReply) for c in set(cohort) - lost)


def _store() -> Any:
    from fedlake.client.stores import MemoryStateStore

    return MemoryStateStore()


def _mean_delta(replies: list[Any], fleet: Any, plan: Any) -> np.ndarray:
    from fedlake.compression.messages import decode_reply

    updates = [
        decode_reply(r, dim=plan.dim, mask=None, codec=fleet.algorithm.compression.upload)
        for r in replies
    ]
    w = np.array([u.weight for u in updates], dtype=np.float64)
    rows = np.stack([u.delta.astype(np.float64) for u in updates])
    return (w @ rows) / w.sum()


def test_fold_from_the_config_matches_to_float_tolerance(spark: Any, tmp_path: Path) -> None:
    inline = _model(tmp_path, {"kind": "inline", "vectorize": False})
    folded = _model(tmp_path / "f", {"kind": "spark", "workers": 2, "fold": True})
    np.testing.assert_allclose(folded, inline, rtol=1e-5, atol=1e-6)
    in_workers = _model(tmp_path / "p", {"kind": "process", "workers": 2, "fold": True})
    np.testing.assert_allclose(in_workers, inline, rtol=1e-5, atol=1e-6)


def test_fold_is_refused_where_it_cannot_work(tmp_path: Path) -> None:
    import pytest

    from fedlake.config import ConfigError

    with pytest.raises(ConfigError, match="process"):
        parse_config({**CONFIG, "executor": {"kind": "inline", "fold": True}})
    raw = {
        **CONFIG,
        "output_dir": str(tmp_path),
        "executor": {"kind": "process", "fold": True},
        "algorithm": {**CONFIG["algorithm"], "aggregator": {"kind": "median"}},  # type: ignore[dict-item]
    }
    with pytest.raises(ValueError, match="linear aggregator"):
        run_experiment(parse_config(raw))


def test_task_retries_rescue_a_task_whose_worker_died(tmp_path: Path) -> None:
    import subprocess
    import sys

    # a process of its own: one SparkContext per process, and this one is built with
    # local[2, retries + 1] by the registry (the tests' shared session has no retries)
    def failed(retries: int) -> str:
        marks = tmp_path / f"r{retries}"
        marks.mkdir()
        done = subprocess.run(
            [sys.executable, "-m", "tests.spark.killer", str(marks), str(retries)],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        return [ln for ln in done.stdout.splitlines() if ln.startswith("FAILED=")][-1]

    assert failed(0) != "FAILED="  # no retry: the killed task's clients are lost
    assert failed(1) == "FAILED="  # one retry: the task runs again and every client replies
