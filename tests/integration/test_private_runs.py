"""Differentially private runs end to end: calibration, the budget, the ledger, refusals."""

from __future__ import annotations

import json

import pytest
import yaml

from fedlake.config import ConfigError, parse_config
from fedlake.orchestration.events import NullObserver
from fedlake.privacy.accounting import ledger_epsilon
from fedlake.run import build_federation, run_experiment


def config(tmp_path, privacy: dict | None, *, rounds: int = 6, **over) -> dict:
    raw = {
        "name": "dp",
        "output_dir": str(tmp_path / "runs"),
        "data": {"scenario": "digits", "num_clients": 40, "partition": "iid"},
        "model": {"kind": "mlp", "hidden": [16]},
        "algorithm": {"client_lr": 0.05, "local_epochs": 1, "batch_size": 8},
        "federation": {"rounds": rounds, "clients_per_round": 20},
        "lakehouse": {"delta": True, "mlflow": False},
    }
    if privacy is not None:
        raw["privacy"] = {"noise": "seeded", **privacy}
    for key, value in over.items():  # the model section is replaced, others merged
        raw[key] = value if key == "model" else {**raw.get(key, {}), **value}
    return raw


def read_rounds(outcome) -> list[dict]:
    from deltalake import DeltaTable

    path = outcome.lakehouse_root / "fedlake" / "default" / "rounds"
    return sorted(DeltaTable(str(path)).to_pyarrow_table().to_pylist(), key=lambda r: r["round"])


def test_epsilon_alone_calibrates_the_noise_to_spend_the_budget(tmp_path) -> None:
    out = run_experiment(parse_config(config(tmp_path, {"epsilon": 2.0, "delta": 1e-5})))
    hist = [h for h in out.result.history if h["status"] == "completed"]
    assert len(hist) == 6 and out.result.stop_reason == "max_rounds"
    eps = [h["epsilon"] for h in hist]
    assert eps == sorted(eps) and 1.9 <= eps[-1] <= 2.0  # the whole budget, not more
    state = out.result.state
    assert len(state.privacy_ledger) == 6  # one central entry per released round
    assert ledger_epsilon(state.privacy_ledger, 1e-5).epsilon == pytest.approx(eps[-1])
    rows = read_rounds(out)
    assert [r["epsilon"] for r in rows] == pytest.approx(eps)
    assert all(r["delta"] == 1e-5 and r["train_loss"] is None for r in rows)
    metrics = json.loads(rows[-1]["metrics"])
    assert metrics["noise_multiplier"] > 0 and metrics["dp_clip"] > 0


def test_per_client_statistics_are_not_published(tmp_path) -> None:
    from deltalake import DeltaTable

    out = run_experiment(parse_config(config(tmp_path, {"epsilon": 4.0}, rounds=2)))
    path = out.lakehouse_root / "fedlake" / "default" / "client_updates"
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    assert rows and all(r["update_norm"] is None and r["train_loss"] is None for r in rows)
    assert {r["status"] for r in rows} == {"accepted"}


def test_the_budget_stops_the_run_before_a_round_would_exceed_it(tmp_path) -> None:
    raw = config(tmp_path, {"epsilon": 3.0, "noise_multiplier": 1.5}, rounds=50)
    out = run_experiment(parse_config(raw))
    assert out.result.stop_reason == "privacy_budget"
    done = [h for h in out.result.history if h["status"] == "completed"]
    assert 1 <= len(done) < 50
    assert done[-1]["epsilon"] <= 3.0
    # one more round would have crossed it
    fed = build_federation(parse_config(raw), observer=NullObserver())
    plan = fed.privacy
    assert plan is not None
    more = plan.projected(out.result.state.privacy_ledger, len(done) + 1)
    assert plan.spent(more).epsilon > 3.0


def test_resume_continues_the_ledger(tmp_path) -> None:
    raw = config(tmp_path, {"epsilon": 2.0}, rounds=4)
    straight = run_experiment(parse_config({**raw, "name": "straight"}))
    first = run_experiment(parse_config({**raw, "name": "halves"}), stop_after=2)
    assert len(first.result.state.privacy_ledger) == 2
    second = run_experiment(parse_config({**raw, "name": "halves"}), resume=True)
    a = [h["epsilon"] for h in straight.result.history]
    b = [h["epsilon"] for h in second.result.history]
    assert b == pytest.approx(a)
    assert (straight.result.state.params == second.result.state.params).all()


def test_local_dp_reports_the_worst_clients_epsilon(tmp_path) -> None:
    raw = config(tmp_path, {"mechanism": "local", "epsilon": 50.0, "clip": 0.5}, rounds=4)
    out = run_experiment(parse_config(raw))
    ledger = out.result.state.privacy_ledger
    assert all(e.mechanism == "local" and e.clients for e in ledger)
    spent = ledger_epsilon(ledger, 1e-5)
    assert spent.scope == "per-client" and spent.worst_client is not None
    assert out.result.history[-1]["epsilon"] == pytest.approx(spent.epsilon)
    assert spent.epsilon <= 50.0


@pytest.mark.parametrize(
    ("privacy", "over", "message"),
    [
        ({"epsilon": 0.05, "noise_multiplier": 0.5}, {}, "exceeded by the first round alone"),
        ({"epsilon": 3.0}, {"algorithm": {"aggregator": {"kind": "median"}}}, "sensitivity"),
        ({"mechanism": "dpsgd", "noise_multiplier": 1.0}, {"model": {"kind": "logreg"}}, "torch"),
        ({"mechanism": "dpsgd", "epsilon": 3.0}, {}, "needs noise_multiplier"),
        ({"epsilon": 3.0, "noise_multiplier": 3.0, "count_noise": 1.0}, {}, "count noise"),
    ],
)
def test_unsafe_or_impossible_settings_are_refused_when_built(
    tmp_path, privacy, over, message
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_federation(parse_config(config(tmp_path, privacy, **over)), observer=NullObserver())


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"noise_multiplier": 0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"epsilon": 3, "delta": 0}, "delta"),
        ({"epsilon": 3, "delta": 1.5}, "delta"),
        ({"delta": 1e-5}, "give noise_multiplier, or epsilon"),
        ({"mechanism": "local", "epsilon": 3, "adaptive": True}, "central"),
    ],
)
def test_bad_privacy_values_are_one_line_config_errors(tmp_path, privacy, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(config(tmp_path, privacy))


def test_dpsgd_clients_keep_their_own_budget(tmp_path) -> None:
    # 40 clients, all 40 every round: every client's budget runs out in the same round
    raw = config(
        tmp_path,
        {"mechanism": "dpsgd", "noise_multiplier": 1.0, "clip": 1.0, "epsilon": 4.0},
        rounds=30,
        federation={"clients_per_round": 40},
    )
    out = run_experiment(parse_config(raw))
    assert out.result.stop_reason == "privacy_budget"
    done = [h for h in out.result.history if h["status"] == "completed"]
    assert 1 <= len(done) < 30
    ledger = out.result.state.privacy_ledger
    assert {e.mechanism for e in ledger} == {"dpsgd"} and all(len(e.clients) == 1 for e in ledger)
    spent = ledger_epsilon(ledger, 1e-5)
    assert spent.scope == "per-client" and spent.epsilon <= 4.0
    assert done[-1]["epsilon"] == pytest.approx(spent.epsilon)
    refused = [h for h in out.result.history if h["status"] != "completed"]
    assert refused and refused[-1]["num_failed"] == 40  # every client said no


def test_dpsgd_epsilon_is_reported_without_a_budget(tmp_path) -> None:
    raw = config(tmp_path, {"mechanism": "dpsgd", "noise_multiplier": 1.2}, rounds=2)
    out = run_experiment(parse_config(raw))
    assert out.result.stop_reason == "max_rounds"
    eps = [h["epsilon"] for h in out.result.history]
    assert 0 < eps[0] < eps[1]


def test_epsilon_goes_to_mlflow_and_the_cli_summary(tmp_path) -> None:
    import subprocess
    import sys

    from mlflow import MlflowClient

    raw = config(tmp_path, {"epsilon": 2.0}, rounds=3, lakehouse={"mlflow": True})
    path = tmp_path / "dp.yaml"  # the config reader takes YAML as well as TOML
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "fedlake.cli.main", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "privacy spent" in proc.stdout and "noise is SEEDED" in proc.stdout
    flat = " ".join(proc.stdout.replace("\u2502", " ").split())  # the summary table wraps
    assert "round 3, the last: DP" in flat  # not the best by un-noised evaluation
    uri = f"sqlite:///{tmp_path / 'runs' / 'dp' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fedlake").experiment_id])
    eps = client.get_metric_history(run.info.run_id, "epsilon")
    assert sorted(m.step for m in eps) == [1, 2, 3]
    assert max(m.value for m in eps) == pytest.approx(2.0, rel=0.05)
    assert float(run.data.params["privacy.noise_multiplier"]) > 0


def test_central_poisson_rounds_are_never_retried_even_when_empty(tmp_path) -> None:
    # q = 1/40: many rounds sample nobody; each is released (noise only), none retried
    raw = config(tmp_path, {"epsilon": 20.0}, rounds=12, federation={"clients_per_round": 1})
    out = run_experiment(parse_config(raw))
    statuses = [h["status"] for h in out.result.history]
    assert statuses == ["completed"] * 12
    assert any(h["num_sampled"] == 0 for h in out.result.history)
    assert len(out.result.state.privacy_ledger) == 12


def test_local_dp_clients_report_nothing_but_the_noised_update(tmp_path) -> None:
    from deltalake import DeltaTable

    raw = config(tmp_path, {"mechanism": "local", "epsilon": 50.0}, rounds=2)
    out = run_experiment(parse_config(raw))
    path = out.lakehouse_root / "fedlake" / "default" / "client_updates"
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    assert rows and all(r["num_examples"] == 1 and r["train_loss"] is None for r in rows)


def test_local_dp_charges_every_attempt_that_reached_the_server(tmp_path) -> None:
    # 18 of 20 must answer with 20% dropout: attempts fail and are retried; the clients
    # of a failed attempt already sent their noised update, so they are charged too
    raw = config(
        tmp_path,
        {"mechanism": "local", "noise_multiplier": 4.0},
        rounds=3,
        federation={"clients_per_round": 20, "min_clients": 18, "dropout": 0.2, "max_retries": 8},
    )
    out = run_experiment(parse_config(raw))
    attempts = [h for h in out.result.history]
    assert any(h["status"] == "retry" for h in attempts)
    ledger = out.result.state.privacy_ledger
    sent = [h for h in attempts if h["num_completed"] + h["num_rejected"] > 0]
    assert len(ledger) == len(sent)
    assert sum(len(e.clients) for e in ledger) == sum(h["num_completed"] for h in sent)
