"""Cells of the grid on real digits: threat-model defaults, n/a, failed and stopped cells."""

import numpy as np
import pytest

from fedlake.config import ConfigError, ResumeError, parse_config
from fedlake.harness import grid as grid_module
from fedlake.harness import run_grid
from fedlake.harness.evaluate import CONFIG
from fedlake.harness.grid import Cell, run_cell
from fedlake.orchestration.events import NullObserver
from fedlake.run import build_experiment, build_federation, run_dir_of


def base(tmp_path, **federation):
    return {
        "name": "cells",
        "seed": 2,
        "output_dir": str(tmp_path),
        "data": {"scenario": "digits", "num_clients": 10, "partition": "iid"},
        "model": {"kind": "logreg"},
        "algorithm": {"client_lr": 0.1, "local_epochs": 1, "batch_size": 32},
        "federation": {"rounds": 2, "clients_per_round": 10, **federation},
        "lakehouse": {"mlflow": False, "delta": False},
    }


def federation(raw):
    return build_federation(parse_config(raw), observer=NullObserver())


def experiment(raw):
    cfg = parse_config(raw)
    return build_experiment(cfg, observer=NullObserver(), run_dir=run_dir_of(cfg))


def test_defences_default_to_the_true_number_of_attackers(tmp_path):
    raw = base(tmp_path)
    raw["attack"] = {"kind": "sign_flip", "fraction": 0.3}  # 3 of 10
    for kind, needed in [("krum", 2 * 3 + 3), ("trimmed_mean", 2 * 3 + 1)]:
        raw["algorithm"]["aggregator"] = {"kind": kind}
        assert federation(raw).algorithm.aggregator.min_updates == needed
    raw["algorithm"]["aggregator"] = {"kind": "bulyan"}  # 4 * 3 + 3 = 15 > 10
    with pytest.raises(ConfigError, match="bulyan needs at least 15 updates per round"):
        federation(raw)


def test_rules_that_need_f_require_it_without_an_attack(tmp_path):
    raw = base(tmp_path)
    raw["algorithm"]["aggregator"] = {"kind": "multi_krum"}
    with pytest.raises(ConfigError, match="algorithm.aggregator: multi_krum needs f"):
        federation(raw)
    raw["algorithm"]["aggregator"] = {"kind": "multi_krum", "f": 1}
    assert federation(raw).algorithm.aggregator.min_updates == 5


def test_a_fraction_that_is_no_attacker_is_refused_and_none_needs_no_fraction(tmp_path):
    raw = base(tmp_path)
    raw["attack"] = {"kind": "label_flip", "fraction": 0.05}  # floor(0.5) = 0
    with pytest.raises(ConfigError, match="fraction 0.05 of a cohort of 10 clients is no attacker"):
        federation(raw)
    raw["attack"] = {"kind": "gaussian"}
    with pytest.raises(ConfigError, match=r"fraction is required: .* in \[0, 1\)"):
        federation(raw)
    raw["attack"] = {"kind": "none"}
    assert experiment(raw).adversary.count(10) == 0


def test_a_cell_that_breaks_is_failed_and_the_grid_keeps_the_others(tmp_path, monkeypatch):
    raw = base(tmp_path)
    raw["attack_eval"] = {
        "attacks": ["none", "ipm"],
        "defences": ["mean"],
        "fractions": [0.2],
        "workers": 1,
    }
    real = grid_module._run

    def broken(base_raw, cell):
        if cell.attack["kind"] == "ipm":
            raise RuntimeError("boom")
        return real(base_raw, cell)

    monkeypatch.setattr(grid_module, "_run", broken)
    outcome = run_grid(raw)
    status = {r["attack"]: (r["status"], r.get("reason")) for r in outcome.rows}
    assert status == {"none": ("ok", None), "ipm": ("failed", "RuntimeError: boom")}
    assert "- ipm 20% mean: RuntimeError: boom" in outcome.markdown_path.read_text()
    (outcome.out_dir / CONFIG).unlink()
    with pytest.raises(ResumeError, match="is missing"):
        run_grid(raw, resume=True)


def test_a_run_that_stops_early_is_not_reported_as_ok(tmp_path):
    # half the clients drop out, every one is needed, no retry: round 1 or 2 fails
    raw = base(tmp_path, dropout=0.5, min_clients=10, max_retries=0)
    row = run_cell(raw, Cell({"kind": "none"}, 0.1, {"kind": "mean"}))
    assert row["status"] in ("stopped", "failed") and row["reason"] == "insufficient_updates"
    assert np.isfinite(row["seconds"])
