"""The round loop on toy clients: golden numbers, rejections, retries, resume, executors."""

import functools
import pickle
from dataclasses import replace

import numpy as np
import pytest
from toy import PoisonTrainer, ToyTrainer, toy_data

from fedlake.algorithms.fedavg import fedavg
from fedlake.backends.inline import InlineExecutor
from fedlake.compression.codec import plain
from fedlake.compression.wire import HEADER_BYTES, read_header
from fedlake.orchestration.checkpoint import CHECKPOINT, FLUSHED, load_checkpoint
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.sinks import RunSinks
from fedlake.simulation import Population, simulate
from fedlake.testing import MemoryStore, NullTracker


def points(n=6):
    return toy_data({f"c{i}": ((float(i), float(-i % 3)), i + 1) for i in range(n)})


def make(tmp_path, **kw):
    args = dict(
        recipe=functools.partial(fedavg, client_lr=0.5),
        trainer=ToyTrainer(),
        data=points(),
        run_dir=tmp_path / "run",
        rounds=5,
        cohort=CohortSpec(count=3),
        seed=11,
        sinks=RunSinks(run_id="", store=MemoryStore(), tracker=NullTracker()),
        observer=NullObserver(),
    )
    args.update(kw)
    return simulate(**args)


def test_full_participation_golden_numbers(tmp_path):
    data = toy_data({"a": ((1.0, 0.0), 1), "b": ((0.0, 4.0), 3)})
    fed = make(tmp_path, data=data, cohort=CohortSpec(count=2), rounds=2)
    res = fed.run()
    # round 1: (0.125, 1.5); round 2: p + 0.5 * (weighted target - p) = (0.1875, 2.25)
    np.testing.assert_allclose(res.state.params, [0.1875, 2.25])
    assert res.stop_reason == "max_rounds"
    assert [h["round"] for h in res.history] == [1, 2]
    assert res.history[0]["num_completed"] == 2 and res.history[0]["bytes_up"] == 2 * (
        HEADER_BYTES + 8
    )


def test_same_seed_is_bit_identical_and_seed_matters(tmp_path):
    a = make(tmp_path / "a").run()
    b = make(tmp_path / "b").run()
    c = make(tmp_path / "c", seed=12).run()
    assert a.state.params.tobytes() == b.state.params.tobytes()
    assert [h["cohort"] for h in a.history] == [h["cohort"] for h in b.history]
    assert [h["cohort"] for h in a.history] != [h["cohort"] for h in c.history]


def test_records_go_to_store_and_tracker(tmp_path):
    fed = make(tmp_path)
    res = fed.run()
    store, tracker = fed.sinks.store, fed.sinks.tracker
    rounds = store.read("rounds")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5]
    assert {r["run_id"] for r in rounds} == {res.run_id}
    assert len(store.read("client_updates")) == 15
    assert len(store.read("models")) == 5
    actions = [r["action"] for r in store.read("audit")]
    assert actions == ["run.start", "run.finish"]
    assert [step for step, _ in tracker.metrics] == [1, 2, 3, 4, 5]
    assert "eval_accuracy" in tracker.metrics[0][1]


def test_a_diverged_client_fails_with_reason_and_round_goes_on(tmp_path):
    data = toy_data({"good1": ((1.0, 1.0), 2), "bad": ((-1.0, 0.0), 2), "good2": ((3.0, 1.0), 2)})
    fed = make(tmp_path, data=data, trainer=PoisonTrainer(), cohort=CohortSpec(count=3), rounds=1)
    res = fed.run()
    rows = fed.sinks.store.read("client_updates")
    bad = next(r for r in rows if r["client_id"] == "bad")
    # the client itself sees its training diverge: it sends nothing and keeps no state
    assert bad["status"] == "failed"
    assert "local training diverged: 2 non-finite values" in bad["reason"]
    assert res.history[0]["num_failed"] == 1 and res.history[0]["num_completed"] == 2
    # only the two good clients are averaged: targets (1,1) and (3,1), lr 0.5
    np.testing.assert_allclose(res.state.params, [1.0, 0.5])


def payload(values):
    """``values`` as the plain (float32) upload codec writes them."""
    return plain().encode(np.asarray(values, np.float32), np.random.default_rng(0))


def float64_payload(reply):
    """The reply's delta payload rewritten as 64-bit floats (a codec the server never uses)."""
    header, body = read_header(reply.payloads["delta"])
    values = body.array("<f4", header.count, "values").astype("<f8").tobytes()
    return replace(header, bits=64, body_length=len(values)).pack() + values


class TamperingExecutor:
    """Runs clients inline, then replaces some replies by malformed ones, as a bad peer could."""

    TAMPER = {
        "c1": lambda u: replace(u, payloads={"delta": payload(np.ones(3))}),
        "c2": lambda u: replace(u, payloads={"delta": float64_payload(u)}),
        "c3": lambda u: replace(u, payloads={"control": u.payloads["delta"]}),
        "c4": lambda u: replace(u, weight=None),
        "c5": lambda u: replace(u, weight=float("nan"), metrics={"train_loss": "low"}),
        "c6": lambda u: replace(u, payloads={"delta": payload([np.nan, 0.0])}),
    }

    def __init__(self, inner):
        self.inner = inner

    def map_clients(self, task, cohort):
        for result in self.inner.map_clients(task, cohort):
            yield self.TAMPER.get(result.client_id, lambda u: u)(result)

    def close(self):
        self.inner.close()


def test_malformed_updates_of_every_kind_are_rejected_in_the_round_loop(tmp_path):
    data = toy_data({f"c{i}": ((float(i), 1.0), 2) for i in range(7)})
    fed = make(
        tmp_path,
        data=data,
        cohort=CohortSpec(count=7),
        rounds=1,
        executor=lambda fleet, stores: TamperingExecutor(InlineExecutor(fleet, stores)),
    )
    res = fed.run()
    rows = {r["client_id"]: r for r in fed.sinks.store.read("client_updates")}
    assert rows["c0"]["status"] == "accepted"
    # a reply carries bytes: a vector of the wrong length or type is refused by the decoder
    expected = {
        "c1": "undecodable update: payload is for a vector of 3 values, expected 2",
        "c2": "undecodable update: payload written by another codec (sparsifier, coder, "
        "bits, bucket) = (0, 1, 64, 0), expected (0, 1, 32, 0)",
        "c3": "missing 'delta' vector",
        "c4": "weight must be a positive finite number, got None",
        "c5": "weight must be a positive finite number, got nan",
        "c6": "vector 'delta' has 1 non-finite values (NaN/Inf)",
    }
    for cid, reason in expected.items():
        assert rows[cid]["status"] == "rejected" and reason in rows[cid]["reason"], rows[cid]
    assert rows["c5"]["num_examples"] == 0 and rows["c5"]["train_loss"] is None
    assert res.history[0]["num_completed"] == 1 and res.history[0]["num_rejected"] == 6
    np.testing.assert_allclose(res.state.params, [0.0, 0.5])  # c0 alone: target (0, 1), lr 0.5


class ShrunkTrainer(ToyTrainer):
    """A broken local trainer that returns a single parameter."""

    def fit(self, params, x, y, **kw):
        res = super().fit(params, x, y, **kw)
        return type(res)(res.params[:1], res.loss, res.num_examples, res.steps)


def test_a_local_model_of_the_wrong_size_fails_the_client_not_broadcast(tmp_path):
    fed = make(tmp_path, trainer=ShrunkTrainer(), rounds=1, max_retries=0)
    res = fed.run()
    rows = fed.sinks.store.read("client_updates")
    assert {r["status"] for r in rows} == {"failed"}
    assert all("returned parameters of shape (1,), expected (2,)" in r["reason"] for r in rows)
    assert res.stop_reason == "insufficient_updates"


def test_too_few_valid_updates_retries_then_stops(tmp_path):
    data = toy_data({f"bad{i}": ((-1.0, float(i)), 1) for i in range(4)})
    obs = NullObserver()
    fed = make(
        tmp_path,
        data=data,
        trainer=PoisonTrainer(),
        cohort=CohortSpec(count=2),
        min_clients=1,
        max_retries=2,
        observer=obs,
    )
    res = fed.run()
    assert res.stop_reason == "insufficient_updates"
    assert res.state.round == 0 and np.all(res.state.params == 0)  # never silently averaged
    statuses = [r["status"] for r in fed.sinks.store.read("rounds")]
    assert statuses == ["retry", "retry", "failed"]
    assert sum("retrying" in m for m in obs.messages) == 2


def test_dropout_is_recorded(tmp_path):
    fed = make(
        tmp_path,
        population=Population(dropout=0.5),
        rounds=4,
        cohort=CohortSpec(count=4),
        max_retries=5,
    )
    res = fed.run()
    dropped = sum(h["num_dropped"] for h in res.history)
    assert dropped > 0
    rows = fed.sinks.store.read("client_updates")
    assert any(r["status"] == "dropped" and "dropout" in r["reason"] for r in rows)


def test_target_accuracy_stops_early(tmp_path):
    res = make(tmp_path, target_accuracy=0.01, rounds=50).run()
    assert res.stop_reason == "target_reached" and res.state.round == 1


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    full = make(tmp_path / "full").run()
    first = make(tmp_path / "split").run(stop_after=2)
    assert first.stop_reason == "paused" and first.state.round == 2
    ckpt = load_checkpoint(tmp_path / "split" / "run")
    assert ckpt.state.round == 2 and not ckpt.pending
    second = make(tmp_path / "split").run(resume=True)
    assert second.state.round == 5
    assert second.state.params.tobytes() == full.state.params.tobytes()
    assert [h["round"] for h in second.history] == [1, 2, 3, 4, 5]


def test_resume_replays_rows_not_yet_written(tmp_path):
    fed = make(tmp_path)
    fed.run(stop_after=1)
    ckpt = load_checkpoint(tmp_path / "run")
    # simulate a kill after the checkpoint but before the sinks were written
    from fedlake.orchestration.checkpoint import save_checkpoint

    ckpt.pending = {"rounds": [{"round": 99, "attempt": 0, "status": "completed"}]}
    ckpt.pending_token = "a save whose rows were never marked written"
    save_checkpoint(ckpt, tmp_path / "run")
    store = MemoryStore()
    fed2 = make(tmp_path, sinks=RunSinks(run_id="", store=store, tracker=NullTracker()))
    fed2.run(resume=True)
    assert 99 in [r["round"] for r in store.read("rounds")]


def test_resume_does_not_write_rows_marked_written_again(tmp_path):
    """One save per round plus a marker: rows the marker names are not replayed."""
    store = MemoryStore()
    fed = make(tmp_path, sinks=RunSinks(run_id="", store=store, tracker=NullTracker()))
    fed.run(stop_after=2)
    on_disk = pickle.loads((tmp_path / "run" / CHECKPOINT).read_bytes())
    assert on_disk.pending, "the checkpoint keeps its rows until the marker says written"
    assert (tmp_path / "run" / FLUSHED).read_text() == on_disk.pending_token
    assert not load_checkpoint(tmp_path / "run").pending
    written = len(store.read("rounds"))
    fed2 = make(tmp_path, sinks=RunSinks(run_id="", store=store, tracker=NullTracker()))
    fed2.run(resume=True)
    rounds = [r["round"] for r in store.read("rounds")]
    assert len(rounds) > written and sorted(set(rounds)) == rounds == sorted(rounds)


def test_a_finished_run_goes_on_when_its_limits_are_raised(tmp_path):
    reached = make(tmp_path, rounds=10, target_accuracy=0.2).run()
    assert reached.stop_reason == "target_reached"
    done = reached.state.round
    obs = NullObserver()
    again = make(tmp_path, rounds=10, target_accuracy=0.2, observer=obs).run(resume=True)
    assert again.state.round == done and obs.messages[-1] == "run already finished: target_reached"
    higher = make(tmp_path, rounds=10, target_accuracy=0.99).run(resume=True)
    assert higher.state.round > done and higher.stop_reason == "max_rounds"
    extended = make(tmp_path, rounds=12, target_accuracy=0.99, observer=obs).run(resume=True)
    assert extended.state.round == 12
    assert obs.messages[-2] == "continuing a run that stopped (max_rounds) after 10 rounds"
    uninterrupted = make(tmp_path / "straight", rounds=12).run()
    assert extended.state.params.tobytes() == uninterrupted.state.params.tobytes()


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        make(tmp_path).run(resume=True)


def test_process_executor_matches_inline(tmp_path):
    inline = make(tmp_path / "i", rounds=3).run()
    proc = make(tmp_path / "p", rounds=3, executor="process", workers=2).run()
    assert proc.state.params.tobytes() == inline.state.params.tobytes()


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"cohort": CohortSpec(count=7)}, "exceeds the number of clients"),
        ({"min_clients": 4}, "min_clients"),
        ({"rounds": 0}, "rounds"),
    ],
)
def test_bad_federation_settings(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg):
        make(tmp_path, **kw)


class PlateauTrainer(ToyTrainer):
    """Accuracy stuck at one value (a plateau); only the loss tells the rounds apart."""

    def evaluate(self, params, x, y):
        return {**super().evaluate(params, x, y), "accuracy": 0.5}


def test_champion_on_an_accuracy_plateau_is_the_lowest_loss_round(tmp_path):
    res = make(tmp_path, trainer=PlateauTrainer(), cohort=CohortSpec(count=6), rounds=4).run()
    losses = [h["eval_loss"] for h in res.history]
    assert losses == sorted(losses, reverse=True)  # full participation converges
    assert res.best_round == 4 and res.best_accuracy == 0.5
    assert res.best_params.tobytes() == res.state.params.tobytes()


class LabelCheckingTrainer(ToyTrainer):
    """Refuses the clients whose data is broken, as a real trainer does on bad labels."""

    def fit(self, params, x, y, **kw):
        if x[0, 0] >= 4:
            raise ValueError("labels must be in [0, 5), got range [0, 7]")
        return super().fit(params, x, y, **kw)


def test_a_crashing_client_is_failed_not_dropped_and_the_console_says_why(tmp_path):
    obs = NullObserver()
    fed = make(tmp_path, trainer=LabelCheckingTrainer(), cohort=CohortSpec(count=6), rounds=1)
    fed.observer = obs
    res = fed.run()
    rows = {r["client_id"]: r for r in fed.sinks.store.read("client_updates")}
    assert rows["c4"]["status"] == rows["c5"]["status"] == "failed"
    assert "ValueError: labels must be in [0, 5)" in rows["c4"]["reason"]
    h = res.history[0]
    assert (h["num_failed"], h["num_dropped"], h["num_completed"]) == (2, 0, 4)
    assert obs.messages[0] == (
        "round 1: 2 failed (e.g. c4: ValueError: labels must be in [0, 5), got range [0, 7]) "
        "of 6 clients; every reason is in client_updates"
    )
