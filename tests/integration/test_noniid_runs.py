"""Every non-IID recipe, stragglers and personalisation through `fedlake run`'s code path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedlake.config import ConfigError, parse_config
from fedlake.orchestration.events import NullObserver
from fedlake.run import build_federation, run_experiment

pytestmark = pytest.mark.integration

RECIPES = [
    "fedavg",
    "fedprox",
    "scaffold",
    "fednova",
    "fedavgm",
    "fedadagrad",
    "fedadam",
    "fedyogi",
]


def config(tmp_path, *, rounds: int = 3, **over) -> dict:
    raw = {
        "name": "noniid",
        "output_dir": str(tmp_path / "runs"),
        "data": {"scenario": "synthetic", "alpha": 1.0, "beta": 1.0, "num_clients": 12},
        "model": {"kind": "logreg"},
        "algorithm": {"client_lr": 0.01, "local_epochs": 2, "batch_size": 10},
        "federation": {"rounds": rounds, "clients_per_round": 4},
        "lakehouse": {"delta": True, "mlflow": False},
    }
    for key, value in over.items():  # the model section is replaced, others merged
        raw[key] = value if key == "model" else {**raw.get(key, {}), **value}
    return raw


def rounds_table(outcome) -> list[dict]:
    from deltalake import DeltaTable

    path = outcome.lakehouse_root / "fedlake" / "default" / "rounds"
    return sorted(DeltaTable(str(path)).to_pyarrow_table().to_pylist(), key=lambda r: r["round"])


def client_rows(outcome) -> list[dict]:
    from deltalake import DeltaTable

    path = outcome.lakehouse_root / "fedlake" / "default" / "client_updates"
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_runs_and_learns(tmp_path, name) -> None:
    cfg = parse_config(config(tmp_path, rounds=4, algorithm={"name": name}))
    outcome = run_experiment(cfg, observer=NullObserver())
    rows = rounds_table(outcome)
    assert [r["status"] for r in rows] == ["completed"] * 4
    accuracy = [r["eval_accuracy"] for r in rows]
    assert all(np.isfinite(accuracy))
    assert max(accuracy) > 0.3, accuracy  # 10 classes: chance is 0.1


def test_scaffold_keeps_control_variates_and_pays_for_them_in_bytes(tmp_path) -> None:
    plain = run_experiment(parse_config(config(tmp_path / "a")), observer=NullObserver())
    cfg = config(tmp_path / "b", algorithm={"name": "scaffold"})
    ours = run_experiment(parse_config(cfg), observer=NullObserver())
    a, b = rounds_table(plain), rounds_table(ours)
    # one more model-sized vector each way (control variate down, its delta up)
    assert b[0]["bytes_down"] > 1.9 * a[0]["bytes_down"]
    assert b[0]["bytes_up"] > 1.9 * a[0]["bytes_up"]
    assert json.loads(b[-1]["metrics"])["control_norm"] > 0
    assert ours.result.state.plugins["scaffold"] is not None


def test_stragglers_are_dropped_or_kept_by_policy(tmp_path) -> None:
    runs = {}
    for policy in ("drop", "keep"):
        fed = {"stragglers": 0.5, "straggler_policy": policy}
        cfg = config(tmp_path / policy, algorithm={"local_epochs": 4}, federation=fed)
        runs[policy] = run_experiment(parse_config(cfg), observer=NullObserver())
    dropped = [r for r in client_rows(runs["drop"]) if r["status"] == "dropped"]
    assert len(dropped) == 3 * 2  # half of every cohort of 4, three rounds
    assert all(r["reason"].startswith("straggler") for r in dropped)
    kept = client_rows(runs["keep"])
    assert {r["status"] for r in kept} == {"accepted"}
    metrics = [json.loads(r["metrics"]) for r in rounds_table(runs["keep"])]
    assert all(m["num_stragglers"] == 2 and m["num_partial"] == 2 for m in metrics)
    drop_rows = rounds_table(runs["drop"])
    assert all(r["num_completed"] == 2 and r["num_dropped"] == 2 for r in drop_rows)
    # a dropped straggler got the model (it worked, then missed the deadline)
    keep_rows = rounds_table(runs["keep"])
    assert drop_rows[0]["bytes_down"] == keep_rows[0]["bytes_down"]


def test_a_deadline_caps_local_work_by_device_speed(tmp_path) -> None:
    fed = {"deadline_s": 0.5, "device_speed": 20.0, "speed_spread": 0.0}
    outcome = run_experiment(
        parse_config(config(tmp_path, algorithm={"local_epochs": 5}, federation=fed)),
        observer=NullObserver(),
    )
    assert all(r["status"] == "accepted" for r in client_rows(outcome))
    # every device does 10 steps at most; the small ones finish, the rest are partial
    assert all(h["num_partial"] >= 1 for h in outcome.result.history)


@pytest.mark.parametrize(
    ("personal", "model"),
    [
        ({"kind": "finetune", "epochs": 2}, {"kind": "logreg"}),
        ({"kind": "ditto", "lam": 0.5}, {"kind": "logreg"}),
        ({"kind": "fedper", "layers": ["out.weight", "out.bias"]}, {"kind": "mlp", "hidden": [8]}),
    ],
)
def test_personalisation_reports_global_and_personal_accuracy(tmp_path, personal, model) -> None:
    raw = config(tmp_path, rounds=3, model=model)
    raw["personalization"] = personal
    outcome = run_experiment(parse_config(raw), observer=NullObserver())
    for row in rounds_table(outcome):
        m = json.loads(row["metrics"])
        assert 0 <= m["personal_accuracy"] <= 1 and row["eval_accuracy"] is not None
        assert m["personal_clients"] == 12
    last = json.loads(rounds_table(outcome)[-1]["metrics"])
    if personal["kind"] != "finetune":
        assert last["personal_seen"] >= 4  # clients that trained keep their personal part


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"algorithm": {"name": "fedprox", "mu": -1}},
            r"algorithm\.mu.*greater than or equal to 0, got -1",
        ),
        ({"algorithm": {"server_lr": 0}}, r"algorithm\.server_lr.*greater than 0, got 0"),
        ({"algorithm": {"name": "fedavgm", "momentum": 1.0}}, r"algorithm\.momentum.*less than 1"),
        ({"algorithm": {"name": "fedadam", "tau": 0}}, r"algorithm\.tau.*greater than 0"),
        ({"algorithm": {"mu": 0.1}}, "mu applies to fedprox, fednova, not fedavg"),
        ({"federation": {"stragglers": 1.5}}, r"federation\.stragglers"),
        ({"federation": {"straggler_policy": "wait"}}, r"straggler_policy"),
        ({"federation": {"deadline_s": 0}}, r"deadline_s"),
    ],
)
def test_bad_hyperparameters_are_one_line_config_errors(tmp_path, over, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(config(tmp_path, **over))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"personalization": {"kind": "fedper", "layers": ["fc9.weight"]}},
            "personal layer 'fc9.weight' is not in the model; its tensors are: weight, bias",
        ),
        ({"personalization": {"kind": "ditto", "lam": 300.0}}, "lam"),
        (
            {"algorithm": {"name": "scaffold"}, "privacy": {"epsilon": 3.0, "noise": "seeded"}},
            "scaffold cannot run with differential privacy",
        ),
    ],
)
def test_impossible_combinations_are_refused_when_built(tmp_path, over, message) -> None:
    raw = config(tmp_path)
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value}
    with pytest.raises(ConfigError, match=message):
        build_federation(parse_config(raw), observer=NullObserver())


def test_fedper_layers_never_leave_the_clients(tmp_path) -> None:
    model = {"kind": "mlp", "hidden": [8]}  # 60*8+8 shared, 8*10+10 personal ("out")
    plain = run_experiment(
        parse_config(config(tmp_path / "a", model=model)), observer=NullObserver()
    )
    raw = config(tmp_path / "b", model=model)
    raw["personalization"] = {"kind": "fedper", "layers": ["out.weight", "out.bias"]}
    ours = run_experiment(parse_config(raw), observer=NullObserver())
    up_plain, up_ours = rounds_table(plain)[0]["bytes_up"], rounds_table(ours)[0]["bytes_up"]
    assert up_ours < up_plain - 4 * 4 * 80  # four clients, at least 90 floats fewer each
    # the global model's personal layers never move from their initial values
    first = ours.result.state.params
    spec_sizes = 60 * 8 + 8
    init = build_federation(parse_config(raw), observer=NullObserver()).trainer.init_params(0)
    assert np.array_equal(first[spec_sizes:], init[spec_sizes:])
    assert not np.array_equal(first[:spec_sizes], init[:spec_sizes])


def test_scaffold_server_control_stays_the_mean_of_the_clients_through_retries(tmp_path) -> None:
    from fedlake.orchestration.checkpoint import load_checkpoint
    from fedlake.simulation import SimulatedStores

    raw = config(
        tmp_path,
        rounds=6,
        data={"num_clients": 4},
        algorithm={"name": "scaffold", "aggregator": {"kind": "mean", "uniform": True}},
        federation={"clients_per_round": 4, "min_clients": 3, "dropout": 0.3, "max_retries": 4},
    )
    outcome = run_experiment(parse_config(raw), observer=NullObserver())
    ckpt = load_checkpoint(outcome.run_dir)
    assert any(h["status"] == "retry" for h in ckpt.history)  # some attempts were discarded
    stores = SimulatedStores()
    stores.restore(ckpt.components[stores.name])

    def control(cid):
        """The client's c_i as its next round loads it: a pending c_i counts once acknowledged."""
        record = stores.load(cid) or {}
        c_i = (record.get("states") or {}).get("scaffold")
        pending = record.get("pending")
        if pending and tuple(ckpt.acks.get(cid, ())) == tuple(pending["tag"]):
            c_i = pending["states"]["scaffold"]
        return np.zeros(ckpt.state.dim, np.float32) if c_i is None else c_i

    controls = [control(f"device-{i:03d}") for i in range(4)]
    # c moves by sum(Delta c_i)/N over the aggregated clients only: c = mean of all c_i
    np.testing.assert_allclose(ckpt.state.plugins["scaffold"], np.mean(controls, axis=0), atol=1e-5)


def test_scaffold_survives_a_model_crafting_attack(tmp_path) -> None:
    raw = config(tmp_path, algorithm={"name": "scaffold"})
    raw["attack"] = {"kind": "sign_flip", "fraction": 0.25}
    outcome = run_experiment(parse_config(raw), observer=NullObserver())
    assert [r["status"] for r in rounds_table(outcome)] == ["completed"] * 3
