"""Attacks and robust rules in the round loop: golden numbers on toy clients."""

import functools

import numpy as np
import pytest
from toy import ToyTrainer, fedavg_with, toy_data

from fedlake.client.runtime import ClientRuntime
from fedlake.compression.messages import encode_model
from fedlake.core.task import ClientReply, ClientTask
from fedlake.core.trainer import FitResult
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.federation import CohortTooSmallError
from fedlake.orchestration.sampling import CohortSpec
from fedlake.simulation import Population, simulate
from fedlake.simulation.attacks import Adversary, Attack, Backdoor, LabelFlip, SignFlip, Trigger
from fedlake.simulation.attacks.poisoning import MALICIOUS, malicious_plugins


def same_points(n=5, point=(1.0, 1.0)):
    return toy_data({f"c{i}": (point, 1) for i in range(n)})


def make(tmp_path, *, aggregator=None, attack=None, fraction=0.2, **kw):
    args = dict(
        recipe=functools.partial(fedavg_with, aggregator),
        trainer=ToyTrainer(),
        data=same_points(),
        run_dir=tmp_path / "run",
        rounds=1,
        cohort=CohortSpec(count=5),
        seed=3,
        observer=NullObserver(),
        adversary=Adversary(attack, fraction) if attack is not None else None,
    )
    args.update(kw)
    return simulate(**args)


def test_sign_flip_cancels_the_mean_and_the_median_ignores_it(tmp_path):
    # five clients all pull p from (0, 0) to (1, 1) (lr 1, one step): honest delta (1, 1).
    # One of five is malicious and sends -4 * (1, 1): the mean is (4 - 4) / 5 = 0.
    res = make(tmp_path / "a", attack=SignFlip()).run()
    np.testing.assert_allclose(res.state.params, [0.0, 0.0], atol=1e-7)
    assert res.history[0]["num_malicious"] == 1
    # the coordinate median of (1, 1, 1, 1, -4) is 1: the attack has no effect
    res = make(tmp_path / "b", attack=SignFlip(), aggregator={"kind": "median"}).run()
    np.testing.assert_allclose(res.state.params, [1.0, 1.0])


def test_honest_runs_record_no_attackers(tmp_path):
    res = make(tmp_path / "a").run()
    assert "num_malicious" not in res.history[0]
    res = make(tmp_path / "b", attack=Attack(), fraction=0.4).run()
    assert res.history[0]["num_malicious"] == 2  # chosen, but they behave honestly
    np.testing.assert_allclose(res.state.params, [1.0, 1.0])


def test_krum_with_a_cohort_too_small_is_refused_at_construction(tmp_path):
    with pytest.raises(CohortTooSmallError, match="krum needs at least 7 updates per round"):
        make(tmp_path, aggregator={"kind": "krum", "f": 2})


def test_too_few_valid_updates_for_the_rule_retries_the_round(tmp_path):
    # krum with f = 1 needs all 5 updates; with 30% dropout most attempts have fewer
    fed = make(
        tmp_path,
        aggregator={"kind": "krum", "f": 1},
        population=Population(dropout=0.3),
        rounds=3,
        max_retries=30,
    )
    res = fed.run()
    retried = [h for h in res.history if h["status"] == "retry"]
    assert retried, "expected at least one attempt with fewer than 5 updates"
    assert all(h["num_completed"] < 5 for h in retried)
    assert any("krum needs 5" in m for m in fed.observer.messages)
    assert [h["round"] for h in res.history if h["status"] == "completed"] == [1, 2, 3]


class LabelSpy(ToyTrainer):
    """Records the labels it was trained on."""

    seen: list = []

    def fit(self, params, x, y, **kw) -> FitResult:
        LabelSpy.seen.append(np.array(y))
        return super().fit(params, x, y, **kw)


def zero_model_task():
    """Round 0's task with the zero model (uncompressed download)."""
    model = encode_model(np.zeros(2, np.float32), None, None, np.random.default_rng(0))
    return ClientTask(round=0, attempt=0, seed=0, model=model)


def malicious_runtime(data, attack):
    """Clients of ``data`` that run ``attack``'s malicious variant when told to."""
    return ClientRuntime(
        data, LabelSpy(), fedavg_with(), variants={MALICIOUS: malicious_plugins(attack)}
    )


def test_data_poisoning_runs_on_malicious_clients_only():
    data = toy_data({"a": ((1.0, 1.0), 2), "b": ((1.0, 1.0), 2)})
    task = zero_model_task()
    LabelSpy.seen = []
    runtime = malicious_runtime(data, LabelFlip(num_classes=3))
    malicious = {"b": MALICIOUS}
    for cid in ("a", "b"):
        assert isinstance(runtime.handle(task, cid, malicious.get(cid)), ClientReply)
    np.testing.assert_array_equal(LabelSpy.seen[0], [0, 0])  # honest: toy labels are 0
    np.testing.assert_array_equal(LabelSpy.seen[1], [2, 2])  # flipped: 3 - 1 - 0


def test_attacked_runs_are_identical_inline_and_in_processes(tmp_path):
    data = toy_data({f"c{i}": ((float(i), 1.0 - i), i + 1) for i in range(8)})
    kw = dict(
        data=data,
        attack=SignFlip(),
        fraction=0.25,
        rounds=3,
        cohort=CohortSpec(count=6),
        aggregator={"kind": "trimmed_mean", "trim_ratio": 0.25},
    )
    inline = make(tmp_path / "inline", **kw).run()
    fed = make(tmp_path / "proc", executor="process", workers=2, **kw)
    proc = fed.run()
    assert inline.state.params.tobytes() == proc.state.params.tobytes()
    assert [h["num_malicious"] for h in proc.history] == [1, 1, 1]


def test_resume_under_attack_is_bit_identical(tmp_path):
    kw = dict(
        attack=SignFlip(),
        rounds=4,
        aggregator={"kind": "centered_clip"},
        data=toy_data({f"c{i}": ((float(i), 2.0), 1) for i in range(5)}),
    )
    whole = make(tmp_path / "whole", **kw).run()
    part = make(tmp_path / "part", **kw)
    part.run(stop_after=2)
    resumed = make(tmp_path / "part", **kw).run(resume=True)
    assert resumed.state.params.tobytes() == whole.state.params.tobytes()
    # centered clipping's state (the last aggregate) survived the checkpoint
    np.testing.assert_array_equal(resumed.state.aggregator_state, whole.state.aggregator_state)


def test_a_poisoning_client_reports_its_clean_example_count():
    # the backdoor trains on 4 clean rows + 4 triggered copies but claims 4: the boost n / m
    # then replaces the model as intended, and the claim is what an honest client says
    data = toy_data({"m": ((1.0, 1.0), 4)})
    attack = Backdoor(poison_fraction=1.0, trigger=Trigger(size=1, value=5.0))
    LabelSpy.seen = []
    update = malicious_runtime(data, attack).handle(zero_model_task(), "m", MALICIOUS)
    assert isinstance(update, ClientReply)
    assert len(LabelSpy.seen[0]) == 8
    assert update.weight == 4.0 and update.metrics["num_examples"] == 4.0
