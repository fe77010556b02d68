"""Secure aggregation on local Spark: the plain model within the encoding's bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cryptography")

from fedlake.algorithms import fedavg  # noqa: E402
from fedlake.backends.spark import SparkExecutor  # noqa: E402
from fedlake.client.logreg import LogRegTrainer  # noqa: E402
from fedlake.data.synthetic import fedprox_synthetic  # noqa: E402
from fedlake.orchestration.checkpoint import load_checkpoint  # noqa: E402
from fedlake.orchestration.sampling import CohortSpec, draw_cohort  # noqa: E402
from fedlake.orchestration.secure import SecureSettings, secure_encoding  # noqa: E402
from fedlake.simulation import simulate  # noqa: E402

DATA = fedprox_synthetic(1, 1, num_devices=8, seed=0)
TRAINER = LogRegTrainer(60, 10)
SETTINGS = SecureSettings(clip=10.0)


def _params(tmp: Path, secure: SecureSettings | None, executor: Any) -> np.ndarray:
    fed = simulate(
        recipe=fedavg, trainer=TRAINER, data=DATA, run_dir=tmp, rounds=1,
        cohort=CohortSpec(count=6), seed=2, secure=secure, executor=executor, vectorize=False,
    )  # fmt: skip
    fed.run()
    ckpt = load_checkpoint(tmp)
    assert ckpt is not None
    return np.asarray(ckpt.state.params)


def test_a_secure_round_on_spark_gives_the_plain_model(spark: Any, tmp_path: Path) -> None:
    def on_spark(fleet: Any, stores: Any) -> SparkExecutor:
        return SparkExecutor(fleet, stores, spark=spark, partitions=3)

    plain = _params(tmp_path / "plain", None, "inline")
    secure = _params(tmp_path / "secure", SETTINGS, on_spark)
    cohort = draw_cohort(DATA.client_ids(), size=6, seed=2, round_=0, attempt=0)
    weight = float(sum(DATA.load(c).num_train for c in cohort))
    bound = secure_encoding(SETTINGS, 6, weighted=True).error_bound(clients=6, total_weight=weight)
    eps = 4 * np.finfo(np.float32).eps * max(1.0, float(np.abs(plain).max()))
    assert np.abs(secure - plain).max() <= bound + eps
