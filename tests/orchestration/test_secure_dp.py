"""Secure aggregation composed with distributed DP and with quantisation before masking:
the noise the sum carries, the accountant's record, the release rule under dropouts, the
ring's width and refusals with their reasons."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cryptography")
pytest.importorskip("randomgen")

from fedlake.config import ConfigError, parse_config  # noqa: E402
from fedlake.orchestration.events import NullObserver  # noqa: E402
from fedlake.orchestration.secure_dp import dp_encoding  # noqa: E402
from fedlake.privacy.accounting import epsilon  # noqa: E402
from fedlake.privacy.distributed import (  # noqa: E402
    DistributedDP,
    min_survivors,
    sensitivities,
    skellam_noise,
    skellam_variance,
)
from fedlake.privacy.ledger import LedgerEntry  # noqa: E402
from fedlake.run import run_experiment  # noqa: E402
from fedlake.run.build import build_experiment  # noqa: E402

BASE: dict[str, Any] = {
    "name": "secure-dp",
    "seed": 1,
    "data": {"scenario": "synthetic", "num_clients": 12},
    "model": {"kind": "logreg"},
    "algorithm": {"name": "fedavg", "local_epochs": 1, "aggregator": {"kind": "mean"}},
    "federation": {"rounds": 2, "clients_per_round": 10, "secure_aggregation": True},
    "lakehouse": {"delta": False, "mlflow": False},
}


def _config(tmp_path: Path, **sections: Any) -> Any:
    raw = json.loads(json.dumps(BASE))
    for name, value in sections.items():
        raw[name] = {**raw.get(name, {}), **value} if isinstance(value, dict) else value
    raw["output_dir"] = str(tmp_path)
    return parse_config(raw)


def _history(tmp_path: Path, **sections: Any) -> list[dict[str, Any]]:
    return run_experiment(_config(tmp_path, **sections)).result.history


def test_skellam_shares_sum_to_the_planned_variance() -> None:
    rng = np.random.default_rng(0)
    total = skellam_variance(1.0, clip=1.0, scale=2.0**10, dim=100)
    shares = [skellam_noise(20_000, total / 8, secure=False, rng=rng) for _ in range(8)]
    summed = np.sum(shares, axis=0)
    assert summed.dtype == np.int64
    assert abs(summed.var() / total - 1) < 0.05 and abs(summed.mean()) < 5 * math.sqrt(total)
    secure = skellam_noise(20_000, total, secure=True, rng=rng)  # the OS-keyed ChaCha stream
    assert abs(secure.var() / total - 1) < 0.05


def test_the_variance_covers_rounding_and_the_skellam_surcharge() -> None:
    # the Gaussian-equivalent multiplier of mu is at least z (module docstring's bound)
    for z, scale, dim in ((0.5, 2.0**16, 10), (1.0, 2.0**7, 10**5), (3.0, 1.0, 1000)):
        d2, d1 = sensitivities(clip=1.0, scale=scale, dim=dim)
        assert d2 == scale + math.sqrt(dim) and d1 == math.sqrt(dim) * d2
        mu = skellam_variance(z, clip=1.0, scale=scale, dim=dim)
        kappa = (1 + 3 * d1 / d2**2) / mu
        assert math.sqrt(mu / (1 + kappa)) / d2 >= z * (1 - 1e-12)


def test_the_ring_holds_the_inputs_and_the_noise_tail() -> None:
    dp = DistributedDP(noise_multiplier=1.0, clip=1.0, denominator=10.0)
    enc = dp_encoding(dp, clients=10, length=61, levels=2**15, expected_dropout=0.1)
    assert enc.min_survivors == 9 and enc.variance == pytest.approx(
        skellam_variance(1.0, clip=1.0, scale=2.0**15, dim=61) / 9
    )
    peak = 10 * (2**15 + 1) + 20 * math.sqrt(10 * enc.variance)
    assert 2 * peak < 2**enc.encoding.bits and enc.encoding.bits == 24
    with pytest.raises(ValueError, match="cannot hold 10 clipped inputs plus the distributed"):
        dp_encoding(dp, clients=10, length=61, levels=2**15, expected_dropout=0.1, bits=16)
    assert min_survivors(10, 0.0) == 10 and min_survivors(10, 0.25) == 8


def test_a_distributed_dp_run_is_noised_accounted_and_said(tmp_path: Path) -> None:
    privacy = {"mechanism": "distributed", "noise_multiplier": 1.0, "clip": 0.5}
    sections: dict[str, Any] = {"privacy": privacy}
    cfg = _config(tmp_path / "a", **sections)
    observer = NullObserver()
    exp = build_experiment(cfg, observer=observer, run_dir=tmp_path / "a" / "run")
    line = next(t for t in observer.messages if t.startswith("privacy:"))
    assert "distributed DP" in line and "Skellam share" in line and "(rdp accountant)" in line
    assert exp.federation.secure is not None and exp.federation.secure.dp is not None
    noisy = _history(tmp_path / "b", **sections)
    again = _history(tmp_path / "c", **sections)  # secure noise: two runs differ
    plain = _history(tmp_path / "d")
    assert [r["status"] for r in noisy] == ["completed", "completed"]
    m = json.loads(noisy[-1]["metrics"])
    assert "train_loss" not in m and m["secagg_bits"] == 24
    # the ledger: one distributed release per round, no amplification, RDP
    ledger = json.loads(noisy[-1]["privacy_ledger"]) if "privacy_ledger" in noisy[-1] else None
    entry = LedgerEntry(1, "distributed", 1.0, "none", 1.0)
    expected = epsilon([entry, entry], 1e-5, accountant="rdp").epsilon
    assert noisy[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert ledger is None or all(e["mechanism"] == "distributed" for e in ledger)
    assert noisy[-1]["eval_loss"] != again[-1]["eval_loss"] != plain[-1]["eval_loss"]
    assert plain[-1]["epsilon"] is None


def test_an_epsilon_budget_calibrates_the_noise_without_amplification(tmp_path: Path) -> None:
    privacy = {"mechanism": "distributed", "epsilon": 20.0, "noise": "seeded"}
    history = _history(tmp_path, privacy=privacy)
    assert history[-1]["epsilon"] <= 20.0 and history[-1]["epsilon"] > 15.0


def test_too_few_survivors_for_the_noise_are_not_unmasked(tmp_path: Path) -> None:
    privacy = {"mechanism": "distributed", "noise_multiplier": 1.0, "noise": "seeded"}
    federation = {"dropout": 0.3, "max_retries": 0, "min_clients": 1}
    observer = NullObserver()
    cfg = _config(  # the complete graph: the protocol itself survives the dropouts
        tmp_path, privacy=privacy, federation=federation,
        secure_aggregation={"expected_dropout": 0.05, "degree": 9, "threshold": 5},
    )  # fmt: skip
    exp = build_experiment(cfg, observer=observer, run_dir=tmp_path / "run")
    exp.federation.observer = observer
    exp.federation.run()
    said = "\n".join(observer.messages)
    assert "whose distributed DP noise shares make up the full noise" in said


@pytest.mark.parametrize(
    ("privacy", "bits"),
    [
        (None, (32, 40)),  # weighted by examples (max_weight 2^16): 8 + 16 + 4 bits
        ({"mechanism": "distributed", "noise_multiplier": 1.0, "noise": "seeded"}, (16, 24)),
    ],
)
def test_quantisation_before_masking_narrows_the_ring(
    tmp_path: Path, privacy: dict[str, Any] | None, bits: tuple[int, int]
) -> None:
    extra = {} if privacy is None else {"privacy": privacy}
    quantize = {"upload": [{"kind": "quantize", "bits": 8}]}
    narrow = _history(tmp_path / "q", compression=quantize, **extra)
    wide = _history(tmp_path / "w", **extra)
    m_narrow, m_wide = json.loads(narrow[-1]["metrics"]), json.loads(wide[-1]["metrics"])
    assert (m_narrow["secagg_bits"], m_wide["secagg_bits"]) == bits
    ratio = m_narrow["secagg_bytes_up_masked"] / m_wide["secagg_bytes_up_masked"]
    assert ratio == pytest.approx(bits[0] / bits[1], rel=0.05)
    assert narrow[-1]["status"] == "completed" and narrow[-1]["eval_loss"] < 5.0


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        (
            {
                "federation": {"secure_aggregation": False},
                "privacy": {"mechanism": "distributed", "noise_multiplier": 1.0},
            },
            "relies on secure aggregation",
        ),
        (
            {
                "privacy": {"mechanism": "distributed", "noise_multiplier": 1.0},
                "algorithm": {"aggregator": {"kind": "median"}},
            },
            "use aggregator 'mean'",
        ),
        (
            {"privacy": {"mechanism": "distributed", "epsilon": 3.0, "accountant": "pld"}},
            "accounted by RDP only",
        ),
        (
            {"privacy": {"mechanism": "distributed", "epsilon": 3.0, "sampling": "poisson"}},
            "apply to mechanism = 'central' only",
        ),
    ],
)
def test_distributed_dp_refusals(tmp_path: Path, sections: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg = _config(tmp_path, **sections)
        build_experiment(cfg, observer=NullObserver(), run_dir=tmp_path / "run")
    assert words in str(err.value)


def test_distributed_dp_runs_in_worker_processes(tmp_path: Path) -> None:
    privacy = {"mechanism": "distributed", "noise_multiplier": 1.0, "noise": "seeded"}
    executor = {"kind": "process", "workers": 2}
    inline = _history(tmp_path / "i", privacy=privacy)
    process = _history(tmp_path / "p", privacy=privacy, executor=executor)
    assert [r["status"] for r in process] == ["completed", "completed"]
    # seeded noise and rounding: the same model whichever executor ran the clients
    assert process[-1]["eval_loss"] == pytest.approx(inline[-1]["eval_loss"], rel=1e-5)
