"""A whole federation with secure aggregation and 20% of each cohort dropping out ends
within the stated bound of the same federation without it (docs/secure-aggregation.md):
the same rounds and survivors, every parameter within ROUNDS x the worst round's
encoding bound x PROPAGATION, and the same accuracy within 0.01."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cryptography")

from fedlake.algorithms import fedavg  # noqa: E402
from fedlake.client.logreg import LogRegTrainer  # noqa: E402
from fedlake.data.synthetic import fedprox_synthetic  # noqa: E402
from fedlake.orchestration.checkpoint import load_checkpoint  # noqa: E402
from fedlake.orchestration.sampling import CohortSpec  # noqa: E402
from fedlake.orchestration.secure import SecureSettings, secure_encoding  # noqa: E402
from fedlake.simulation import Population, simulate  # noqa: E402

DATA = fedprox_synthetic(0.5, 0.5, num_devices=40, seed=3)
TRAINER = LogRegTrainer(60, 10)
ROUNDS, COHORT, SEED = 8, 20, 5
SETTINGS = SecureSettings(clip=10.0)
# a round's encoding error moves the next round's start; local training (a contraction
# for logistic regression at this step size) carries it on at most this factor
PROPAGATION = 2.0


def _run(tmp: Path, secure: SecureSettings | None) -> tuple[Any, float]:
    fed = simulate(
        recipe=fedavg, trainer=TRAINER, data=DATA, run_dir=tmp, rounds=ROUNDS,
        cohort=CohortSpec(count=COHORT), seed=SEED, secure=secure, eval_clients=10,
        population=Population(dropout=0.2),
    )  # fmt: skip
    t0 = time.perf_counter()
    fed.run()
    ckpt = load_checkpoint(tmp)
    assert ckpt is not None
    return ckpt, time.perf_counter() - t0


def test_a_secure_federation_with_20_percent_dropouts_ends_within_the_bound(
    tmp_path: Path,
) -> None:
    plain, plain_s = _run(tmp_path / "plain", None)
    secure, secure_s = _run(tmp_path / "secure", SETTINGS)
    rows = list(zip(plain.history, secure.history, strict=True))
    assert len(rows) == ROUNDS and all(s["status"] == "completed" for _, s in rows)
    dropped = [p["num_dropped"] for p, _ in rows]
    assert [s["num_dropped"] for _, s in rows] == dropped
    assert sum(dropped) >= 0.1 * ROUNDS * COHORT  # dropouts did happen (20% expected)
    encoding = secure_encoding(SETTINGS, COHORT, weighted=True)
    worst = max(  # each round's encoding bound, survivors / (scale x their weight), at
        # its largest: the weight of the cohort's lightest clients as many as survived
        encoding.error_bound(clients=s["num_completed"], total_weight=_lightest(s))
        for _, s in rows
    )
    gap = float(np.abs(secure.state.params - plain.state.params).max())
    assert gap <= ROUNDS * worst * PROPAGATION, (gap, worst)
    assert abs(secure.history[-1]["eval_accuracy"] - plain.history[-1]["eval_accuracy"]) <= 0.01
    print(f"secure/plain wall time: {secure_s / plain_s:.1f}x; max gap {gap:.2e} <= "
          f"{ROUNDS * worst * PROPAGATION:.2e}")  # fmt: skip


def _lightest(row: dict[str, Any]) -> float:
    """The smallest total weight ``num_completed`` clients of a round's cohort can have."""
    weights = sorted(DATA.load(c).num_train for c in json.loads(row["cohort"]))
    return float(sum(weights[: row["num_completed"]]))
