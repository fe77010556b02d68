"""`fedlake.doctor`: one small config per finding, its numbers pinned to the library."""

import math
from pathlib import Path

import pytest

from fedlake.aggregators import build_aggregator
from fedlake.config import parse_config
from fedlake.doctor import diagnose, diagnose_file
from fedlake.doctor.compression import TOPK_MIN_RATIO
from fedlake.doctor.privacy import NOISE_LIMIT
from fedlake.privacy.calibration import plan_epsilon, plan_noise
from fedlake.simulation.evaluation import DEFAULT_EVAL_CLIENTS

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.toml"))
SYNTHETIC = {"scenario": "synthetic", "num_clients": 30}  # logreg of 610 weights: cheap


def config(**sections):
    raw = {"data": SYNTHETIC, "model": {"kind": "logreg"}, **sections}
    return parse_config(raw)


def quiet(findings):
    """The findings but the one every config without held-out clients has."""
    return [f for f in findings if f.check != "eval.holdout"]


def by_check(findings, check):
    found = [f for f in findings if f.check == check]
    assert len(found) == 1, findings
    return found[0]


def test_central_dp_with_a_budget_and_few_clients_is_drowned():
    cfg = config(
        data={**SYNTHETIC, "num_clients": 1000},
        federation={"rounds": 30, "clients_per_round": 5},
        privacy={"epsilon": 1},
    )
    f = by_check(diagnose(cfg), "privacy.noise")
    plan = {"num_clients": 1000, "rounds": 30}
    z = plan_noise(1, 1e-5, clients_per_round=5, **plan)
    assert f.severity == "warning" and z / 5 > NOISE_LIMIT
    assert f"z = {z:.3g}" in f.message and f"z / m = {z / 5:.3g}" in f.message
    needed = int(f.fix.split("sample at least ")[1].split()[0])

    def spread(m):
        return plan_noise(1, 1e-5, clients_per_round=m, **plan) / m

    assert spread(needed) <= NOISE_LIMIT < spread(needed - 1)
    accept = plan_epsilon(clients_per_round=5, noise_multiplier=NOISE_LIMIT * 5, delta=1e-5,
                          **plan).epsilon  # fmt: skip
    assert f"accept epsilon {accept:.3g}" in f.fix


def test_central_dp_that_no_cohort_of_the_population_rescues():
    cfg = config(federation={"rounds": 30, "clients_per_round": 5}, privacy={"epsilon": 3})
    z = plan_noise(3, 1e-5, num_clients=30, clients_per_round=30, rounds=30)
    assert z / 30 > NOISE_LIMIT  # even every client a round
    f = by_check(diagnose(cfg), "privacy.noise")
    assert "even all 30 clients a round are too few" in f.fix


def test_given_noise_needs_z_over_the_limit_clients():
    cfg = config(
        federation={"rounds": 10, "clients_per_round": 10},
        privacy={"noise_multiplier": 2.0, "clip": 1.0, "adaptive": False},
    )
    f = by_check(diagnose(cfg), "privacy.noise")
    assert "z / m = 0.2 x clip" in f.message
    assert f"sample at least {math.ceil(2.0 / NOISE_LIMIT)} clients per round" in f.fix


def test_enough_clients_give_no_noise_finding():
    cfg = config(federation={"rounds": 10, "clients_per_round": 30}, privacy={"epsilon": 8})
    assert plan_noise(8, 1e-5, num_clients=30, clients_per_round=30, rounds=10) / 30 < NOISE_LIMIT
    assert not [f for f in diagnose(cfg) if f.check == "privacy.noise"]


def test_fixed_sampling_costs_epsilon_that_poisson_would_not():
    cfg = config(
        federation={"rounds": 20, "clients_per_round": 30},
        privacy={"noise_multiplier": 1.0, "sampling": "fixed"},
    )
    f = by_check(diagnose(cfg), "privacy.sampling")
    kw = {"num_clients": 30, "clients_per_round": 30, "noise_multiplier": 1.0, "rounds": 20,
          "delta": 1e-5}  # fmt: skip
    fixed = plan_epsilon(sampling="fixed", **kw).epsilon
    poisson = plan_epsilon(sampling="poisson", **kw).epsilon
    assert f"spends epsilon {fixed:.3g}" in f.message and f"spend {poisson:.3g}" in f.message
    assert "sampling = 'poisson'" in f.fix


def test_a_robust_rule_under_secure_aggregation_is_an_error():
    cfg = config(
        federation={"clients_per_round": 10, "secure_aggregation": True},
        algorithm={"aggregator": {"kind": "median"}},
    )
    f = by_check(diagnose(cfg), "secure.robust")
    assert f.severity == "error" and "'median'" in f.message
    assert "kind = 'mean'" in f.fix and "secure_aggregation = false" in f.fix


def test_krum_with_f_too_large_for_the_cohort():
    cfg = config(
        federation={"clients_per_round": 8},
        algorithm={"aggregator": {"kind": "krum", "f": 3}},
    )
    f = by_check(diagnose(cfg), "aggregator.cohort")
    needed = build_aggregator({"kind": "krum", "f": 3}).min_updates
    assert needed > 8 and f.severity == "error"
    assert f"needs at least {needed} updates" in f.message
    best = max(f for f in range(9) if build_aggregator({"kind": "krum", "f": f}).min_updates <= 8)
    assert f"sample at least {needed} clients" in f.fix and f"lower f to {best}" in f.fix


def test_bulyan_that_dropout_starves_is_a_warning():
    cfg = config(
        federation={"clients_per_round": 12, "dropout": 0.2},
        algorithm={"aggregator": {"kind": "bulyan", "f": 2}},
    )
    needed = build_aggregator({"kind": "bulyan", "f": 2}).min_updates
    assert 12 * 0.8 < needed <= 12
    f = by_check(diagnose(cfg), "aggregator.cohort")
    assert f.severity == "warning" and f"sample at least {math.ceil(needed / 0.8)}" in f.fix


def test_krum_without_f_is_the_runs_error():
    cfg = config(algorithm={"aggregator": {"kind": "krum"}})
    f = by_check(diagnose(cfg), "aggregator.options")
    assert f.severity == "error" and "needs f" in f.message and "f" in f.fix


def test_secure_aggregation_over_two_clients():
    cfg = config(federation={"clients_per_round": 2, "secure_aggregation": True})
    f = by_check(diagnose(cfg), "secure.cohort")
    assert f.severity == "error" and "at least 3" in f.fix


def test_a_large_population_without_eval_clients_is_evaluated_on_a_sample():
    n = DEFAULT_EVAL_CLIENTS + 1000
    cfg = config(
        data={"scenario": "activity", "num_clients": n},
        federation={"clients_per_round": 10, "target_accuracy": 0.8},
    )
    f = by_check(diagnose(cfg), "eval.sample")
    assert f.severity == "info" and f"{DEFAULT_EVAL_CLIENTS:,} of the {n:,}" in f.message
    assert "eval_clients" in f.fix
    pinned = config(
        data={"scenario": "activity", "num_clients": n},
        federation={"clients_per_round": 10, "eval_clients": 50},
    )
    assert not [f for f in diagnose(pinned) if f.check == "eval.sample"]


def test_topk_keeping_a_handful_of_weights_without_error_feedback():
    cfg = config(compression={"upload": [{"kind": "topk", "ratio": 0.01}]})
    findings = diagnose(cfg)
    f = by_check(findings, "compression.topk")
    assert "keeps about 6 of the model's 610 weights" in f.message  # round(0.01 * 610)
    assert f"ratio >= {TOPK_MIN_RATIO:g}" in f.fix
    measured = config(
        compression={"upload": [{"kind": "topk", "ratio": 0.05}], "error_feedback": True}
    )
    assert quiet(diagnose(measured)) == []  # top-5% + EF: +0.29 points on this model
    assert by_check(findings, "compression.error_feedback").fix.endswith("error_feedback = true")


@pytest.mark.parametrize(
    ("compression", "check", "severity"),
    [
        ({"upload": [{"kind": "random_mask", "ratio": 0.1}], "error_feedback": True},
         "compression.random_mask", "warning"),
        ({"upload": [{"kind": "random_mask", "ratio": 0.1}]}, "compression.random_mask", "info"),
        ({"upload": [{"kind": "quantize", "bits": 1}]}, "compression.quantize", "warning"),
        ({"upload": [{"kind": "structured_mask", "ratio": 0.1}]},
         "compression.structured", "warning"),
        ({"prune": {"sparsity": 0.5}}, "compression.prune", "warning"),
    ],
)  # fmt: skip
def test_compression_measured_to_cost_accuracy(compression, check, severity):
    f = by_check(diagnose(config(compression=compression)), check)
    assert f.severity == severity and "docs/results.md" in f.message


def test_8_bit_compression_is_fine():
    cfg = config(compression={"upload": [{"kind": "quantize", "bits": 8}]})
    assert quiet(diagnose(cfg)) == []


def test_the_default_example_only_lacks_held_out_clients():
    findings = diagnose_file(Path(__file__).parents[2] / "examples/activity_fedavg.toml")
    assert [(f.severity, f.check) for f in findings] == [("warning", "eval.holdout")]


def test_no_held_out_clients_is_a_warning_with_a_suggested_count():
    f = by_check(diagnose(config()), "eval.holdout")
    assert f.severity == "warning" and "holdout_clients (e.g. 3 of the 30 clients" in f.fix
    assert not [f for f in diagnose(config(federation={"holdout_clients": 3}))
                if f.check == "eval.holdout"]  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_has_no_error(path):
    assert [f for f in diagnose_file(path) if f.severity == "error"] == []


def test_a_config_that_does_not_validate_is_one_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[federation]\nrounds = 0\n")
    (f,) = diagnose_file(path)
    assert (f.severity, f.check) == ("error", "config.load") and "federation.rounds" in f.message
