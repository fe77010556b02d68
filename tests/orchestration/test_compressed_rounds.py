"""Compression in the round loop: honest bytes, error feedback across rounds, pruning."""

import functools
import json
from dataclasses import replace

import numpy as np
from toy import PoisonTrainer, ToyTrainer, toy_data

from fedlake.algorithms.spec import RecipeSpec, build_algorithm
from fedlake.backends.inline import InlineExecutor
from fedlake.compression.messages import MODEL_HEADER
from fedlake.compression.wire import HEADER_BYTES
from fedlake.config import AlgorithmConfig, CompressionConfig
from fedlake.orchestration.checkpoint import load_checkpoint
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.sinks import RunSinks
from fedlake.simulation import Population, SimulatedStores, simulate
from fedlake.testing import MemoryStore, NullTracker


def recipe(lr=0.5, **compression):
    """A picklable factory: FedAvg with the given [compression] section."""
    spec = RecipeSpec(
        algorithm=AlgorithmConfig(client_lr=lr, local_epochs=1),
        compression=CompressionConfig.model_validate(compression),
    )
    return functools.partial(build_algorithm, spec)


def client_records(run_dir):
    """The simulated clients' records, as the run's checkpoint saved them."""
    stores = SimulatedStores()
    stores.restore(load_checkpoint(run_dir).components[SimulatedStores.name])
    return stores.records


def residuals(run_dir):
    """Each client's error-feedback residual, as the run's checkpoint saved it."""
    return {cid: rec["states"]["error_feedback"] for cid, rec in client_records(run_dir).items()}


def make(tmp_path, compression, *, data=None, dim=2, **kw):
    args = dict(
        recipe=recipe(**compression),
        trainer=ToyTrainer(dim),
        data=data,
        run_dir=tmp_path / "run",
        rounds=3,
        cohort=CohortSpec(count=len(data.client_ids())),
        seed=3,
        sinks=RunSinks(run_id="", store=MemoryStore(), tracker=NullTracker()),
        observer=NullObserver(),
    )
    args.update(kw)
    return simulate(**args)


TOPK_EF = {"upload": [{"kind": "topk", "ratio": 0.5}], "error_feedback": True}


def test_error_feedback_golden_rounds_and_residual_kept_per_client(tmp_path):
    # One client with target (4, 2), lr 0.5, top-1 of 2 coordinates:
    # r1: delta (2, 1) -> send (2, 0), keep (0, 1); params (2, 0)
    # r2: delta (1, 1) + (0, 1) = (1, 2) -> send (0, 2), keep (1, 0); params (2, 2)
    # r3: delta (1, 0) + (1, 0) = (2, 0) -> send (2, 0), keep (0, 0); params (4, 2): exact
    data = toy_data({"a": ((4.0, 2.0), 1)})
    expected = {1: ([2, 0], [0, 1]), 2: ([2, 2], [1, 0]), 3: ([4, 2], [0, 0])}
    for rounds, (params, residual) in expected.items():
        fed = make(tmp_path / str(rounds), TOPK_EF, data=data, rounds=rounds)
        res = fed.run()
        np.testing.assert_array_equal(res.state.params, params)
        np.testing.assert_array_equal(residuals(fed.run_dir)["a"], residual)


def test_without_error_feedback_dropped_coordinates_are_lost(tmp_path):
    # target (4, 1), lr 0.5, top-1: r1 delta (2, 0.5) sends (2, 0); r2 delta (1, 0.5)
    # sends (1, 0): the second coordinate never moved and nothing remembers it.
    data = toy_data({"a": ((4.0, 1.0), 1)})
    res = make(tmp_path, {"upload": [{"kind": "topk", "ratio": 0.5}]}, data=data, rounds=2).run()
    np.testing.assert_array_equal(res.state.params, [3.0, 0.0])
    assert client_records(tmp_path / "run") == {}


def test_bytes_are_the_encoded_payload_sizes(tmp_path):
    data = toy_data({"a": ((4.0, 2.0), 1), "b": ((1.0, 3.0), 2)})
    fed = make(tmp_path, TOPK_EF, data=data, rounds=1)
    res = fed.run()
    # upload: header + a 1-byte position bitmap (smaller than a u16 index for 2 values)
    # + one float32 value; download: model header + codec header + two float32 values
    up = HEADER_BYTES + 1 + 4
    down = MODEL_HEADER.size + HEADER_BYTES + 2 * 4
    rows = fed.sinks.store.read("client_updates")
    assert [r["bytes"] for r in rows] == [up, up]
    assert [r["bytes_down"] for r in rows] == [down, down]
    h = res.history[0]
    assert h["bytes_up"] == 2 * up and h["bytes_down"] == 2 * down
    assert h["upload_ratio"] == (2 * 8) / (2 * up)  # float32 deltas would be 8 bytes each
    assert h["download_ratio"] == 8 / down


def test_first_seen_clients_start_with_a_zero_residual_and_others_keep_theirs(tmp_path):
    data = toy_data({f"c{i}": ((float(i + 1), float(2 * i + 3)), 1) for i in range(4)})
    fed = make(tmp_path, TOPK_EF, data=data, cohort=CohortSpec(count=2), rounds=3)
    res = fed.run()
    kept = residuals(fed.run_dir)
    seen = {c for h in res.history for c in json.loads(h["cohort"])}
    assert set(kept) == seen
    for residual in kept.values():
        assert residual.shape == (2,) and np.count_nonzero(residual) <= 1


def test_resume_with_error_feedback_is_bit_identical(tmp_path):
    data = toy_data({f"c{i}": ((float(i + 1), float(3 - i)), i + 1) for i in range(5)})
    kw = dict(data=data, cohort=CohortSpec(count=3), rounds=4)
    straight = make(tmp_path / "a", TOPK_EF, **kw).run()
    make(tmp_path / "b", TOPK_EF, **kw).run(stop_after=2)
    resumed = make(tmp_path / "b", TOPK_EF, **kw).run(resume=True)
    assert resumed.state.params.tobytes() == straight.state.params.tobytes()


EVERYTHING = {
    "upload": [{"kind": "topk", "ratio": 0.5}, {"kind": "quantize", "bits": 8}],
    "download": [{"kind": "quantize", "bits": 8, "stochastic": False}],
    "error_feedback": True,
    "prune": {"sparsity": 0.25, "start_round": 1},
}


def test_process_executor_matches_inline_with_state_pruning_and_quantisation(tmp_path):
    data = toy_data(
        {f"c{i}": (tuple(float((i * j) % 5 - 2) for j in range(8)), i + 1) for i in range(6)}
    )
    kw = dict(data=data, dim=8, cohort=CohortSpec(count=4), rounds=4)
    inline = make(tmp_path / "i", EVERYTHING, executor="inline", **kw).run()
    proc = make(tmp_path / "p", EVERYTHING, executor="process", workers=2, **kw).run()
    assert proc.state.params.tobytes() == inline.state.params.tobytes()
    states_i = residuals(tmp_path / "i" / "run")
    states_p = residuals(tmp_path / "p" / "run")
    assert states_i.keys() == states_p.keys()
    for c in states_i:
        assert states_i[c].tobytes() == states_p[c].tobytes()


def test_pruned_weights_are_zero_and_stay_zero(tmp_path):
    data = toy_data({f"c{i}": (tuple(float(j + 1 + i) for j in range(8)), 1) for i in range(3)})
    prune = {"prune": {"sparsity": 0.5, "start_round": 1}}
    fed = make(tmp_path, prune, data=data, dim=8, rounds=4)
    res = fed.run()
    p = res.state.params
    assert np.count_nonzero(p) == 4
    # round 1 ran unpruned; from round 2 the 4 smallest weights are 0 (targets grow with j)
    np.testing.assert_array_equal(p[:4], 0.0)
    assert (p[4:] > 0).all()
    h = res.history
    assert h[0]["upload_ratio"] < h[1]["upload_ratio"]  # only the survivors are sent
    assert h[1]["download_ratio"] > h[0]["download_ratio"]


def test_clients_train_from_the_model_as_decoded(tmp_path):
    # 8-bit download: the client's delta is relative to the quantised model it received,
    # so the server still moves exactly to the client's target after one full step.
    data = toy_data({"a": ((0.3, 0.7), 1)})
    fed = make(
        tmp_path,
        {"download": [{"kind": "quantize", "bits": 8, "stochastic": False}]},
        data=data,
        rounds=2,
        recipe=recipe(lr=1.0, download=[{"kind": "quantize", "bits": 8, "stochastic": False}]),
    )
    res = fed.run()
    np.testing.assert_allclose(res.state.params, [0.3, 0.7], rtol=0, atol=1e-6)


class CorruptingExecutor:
    """Runs clients inline, then damages one payload in transit."""

    def __init__(self, inner):
        self.inner = inner

    def map_clients(self, task, cohort):
        for result in self.inner.map_clients(task, cohort):
            if result.client_id == "bad":
                payload = result.payloads["delta"]
                result = replace(result, payloads={"delta": payload[:-3]})
            yield result

    def close(self):
        self.inner.close()


def corrupting(fleet, stores):
    """The real clients, inline, behind a link that damages one payload."""
    return CorruptingExecutor(InlineExecutor(fleet, stores))


def test_an_undecodable_payload_is_rejected_with_the_reason(tmp_path):
    data = toy_data({"good": ((2.0, 2.0), 1), "bad": ((9.0, 9.0), 1)})
    fed = make(tmp_path, TOPK_EF, data=data, rounds=1, executor=corrupting)
    res = fed.run()
    rows = {r["client_id"]: r for r in fed.sinks.store.read("client_updates")}
    assert rows["good"]["status"] == "accepted"
    assert rows["bad"]["status"] == "rejected"
    assert rows["bad"]["reason"].startswith("undecodable update: ")
    assert "body" in rows["bad"]["reason"] or "truncated" in rows["bad"]["reason"]
    assert res.history[0]["num_rejected"] == 1


def test_dropped_clients_keep_their_residual_untouched(tmp_path):
    data = toy_data({f"c{i}": ((float(i + 2), 1.0), 1) for i in range(4)})
    fed = make(tmp_path, TOPK_EF, data=data, rounds=3, population=Population(dropout=0.5))
    fed.run()
    rows = fed.sinks.store.read("client_updates")
    sent = {r["client_id"] for r in rows if r["status"] == "accepted"}
    assert set(residuals(fed.run_dir)) == sent


def test_structured_mask_clients_train_only_the_weights_they_send(tmp_path):
    # Konecny et al.'s structured update: 2 of 8 weights, drawn before training, are
    # trained and sent exactly (no loss to sparsification, no scaling).
    target = tuple(float(j + 1) for j in range(8))
    data = toy_data({"a": (target, 1)})
    structured = {"upload": [{"kind": "structured_mask", "ratio": 0.25}]}
    res = make(tmp_path, structured, data=data, dim=8, rounds=1).run()
    p = res.state.params
    moved = np.flatnonzero(p)
    assert moved.size == 2
    np.testing.assert_array_equal(p[moved], 0.5 * np.array(target, np.float32)[moved])
    # an 8-byte seed instead of indices: header + seed + two float32 values
    assert res.history[0]["bytes_up"] == HEADER_BYTES + 8 + 2 * 4


def test_structured_mask_under_pruning_picks_among_the_survivors(tmp_path):
    target = tuple(float(j + 1) for j in range(8))
    data = toy_data({f"c{i}": (target, 1) for i in range(3)})
    comp = {
        "upload": [{"kind": "structured_mask", "ratio": 0.5}],
        "prune": {"sparsity": 0.5, "start_round": 1},
    }
    full = make(tmp_path / "a", comp, data=data, dim=8, rounds=1).run().state.params
    res = make(tmp_path / "b", comp, data=data, dim=8, rounds=3).run()
    survivors = np.flatnonzero(res.state.params)
    assert set(survivors) <= set(np.flatnonzero(full))
    assert survivors.size <= 4


def test_retried_attempts_traffic_is_in_the_history_and_the_totals(tmp_path):
    # 2 of 3 clients diverge: an attempt that samples only them has no valid update
    data = toy_data({"ok": ((1.0, 1.0), 1), "bad1": ((-1.0, 0.0), 1), "bad2": ((-2.0, 0.0), 1)})
    fed = make(
        tmp_path,
        TOPK_EF,
        data=data,
        trainer=PoisonTrainer(),
        cohort=CohortSpec(count=2),
        min_clients=1,
        max_retries=5,
        rounds=3,
    )
    res = fed.run()
    table = fed.sinks.store.read("rounds")
    assert any(r["status"] == "retry" for r in table)  # the seed gives at least one retry
    assert len(res.history) == len(table)  # every attempt, not just the completed ones
    last = res.history[-1]
    assert last["total_bytes_up"] == sum(r["bytes_up"] for r in table)
    assert last["total_bytes_down"] == sum(r["bytes_down"] for r in table)


def test_dropped_clients_download_nothing(tmp_path):
    data = toy_data({f"c{i}": ((float(i), 1.0), 1) for i in range(6)})
    fed = make(tmp_path, {}, data=data, rounds=2, population=Population(dropout=0.5))
    res = fed.run()
    rows = fed.sinks.store.read("client_updates")
    assert {r["bytes_down"] for r in rows if r["status"] == "dropped"} == {0}
    for h in res.history:
        got = [r for r in rows if r["round"] == h["round"] and r["status"] != "dropped"]
        assert h["bytes_down"] == sum(r["bytes_down"] for r in got) > 0


def momentum_fedavg(**compression):
    """FedAvg with a heavy-ball server optimiser, whose velocity would revive pruned weights."""
    from fedlake.core.transform import Transform

    def init(params):
        return np.zeros_like(params)

    def update(vec, velocity, *, params, rng):
        velocity = (0.9 * velocity + vec).astype(np.float32)
        return velocity, velocity

    return replace(recipe(**compression)(), server=Transform(init, update))


def test_pruned_weights_stay_zero_under_a_stateful_server_optimiser(tmp_path):
    data = toy_data({f"c{i}": (tuple(float(j + 1) for j in range(8)), 1) for i in range(2)})
    prune = {"prune": {"sparsity": 0.5, "start_round": 2}}
    fed = make(
        tmp_path,
        prune,
        data=data,
        dim=8,
        rounds=5,
        recipe=functools.partial(momentum_fedavg, **prune),
    )
    res = fed.run()
    assert np.count_nonzero(res.state.params) == 4
    np.testing.assert_array_equal(res.state.params[:4], 0.0)
    models = fed.sinks.store.read("models")
    for m in models[2:]:  # the saved (and registered) models are pruned too
        assert np.count_nonzero(np.frombuffer(m["params"], np.float32)) == 4


def test_a_diverged_client_keeps_its_residual_from_before(tmp_path):
    class DivergeInRound2(ToyTrainer):
        def fit(self, params, x, y, **kw):
            res = super().fit(params, x, y, **kw)
            if params[0] != 0:  # from round 2 on
                return type(res)(np.full_like(res.params, np.inf), res.loss, res.num_examples, 1)
            return res

    data = toy_data({"a": ((4.0, 2.0), 1)})
    fed = make(tmp_path, TOPK_EF, data=data, trainer=DivergeInRound2(), rounds=2, max_retries=0)
    fed.run()
    np.testing.assert_array_equal(residuals(fed.run_dir)["a"], [0.0, 1.0])  # round 1's


def test_a_checkpoint_from_before_client_states_still_resumes(tmp_path):
    import pickle

    from fedlake.orchestration.checkpoint import CHECKPOINT, FORMAT_VERSION

    data = toy_data({"a": ((4.0, 2.0), 1)})
    make(tmp_path, {}, data=data, rounds=1).run()
    path = tmp_path / "run" / CHECKPOINT
    old = pickle.loads(path.read_bytes())
    for key in ("components", "acks", "legacy_client_states"):  # what format 1 wrote:
        del old.__dict__[key]  # no client state anywhere
    del old.state.__dict__["plugins"]  # and the state of its time
    old.state.__dict__["control"] = None
    old.version = 1
    path.write_bytes(pickle.dumps(old))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.components == {} and ckpt.legacy_client_states is None
    assert ckpt.acks == {} and ckpt.state.plugins == {} and ckpt.version == FORMAT_VERSION
    res = make(tmp_path, {}, data=data, rounds=2).run(resume=True)
    assert [h["round"] for h in res.history] == [1, 2]
