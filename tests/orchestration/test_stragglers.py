"""Stragglers and deadlines: Population's workloads, and what the round loop does with them.

FedProx's setup (Li et al., MLSys 2020): a share of each round's clients straggle and do
1..E-1 of their E local epochs; the server either keeps their partial work or drops it.
"""

import functools
import math
from dataclasses import replace

import numpy as np
import pytest

from fedlake.algorithms import fedavg, fedprox
from fedlake.backends.inline import InlineExecutor
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.runtime import ClientRuntime
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.rng import CLIENT_RNG, client_key, round_rng
from fedlake.core.task import (
    STRAGGLER,
    ClientFailure,
    ClientReply,
    ClientTask,
    FailureReason,
    Instructions,
    local_steps,
)
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.sinks import RunSinks
from fedlake.simulation import Population, simulate
from fedlake.testing import MemoryStore

CLIENTS = [f"c{i}" for i in range(20)]

# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1\.0"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\), got -0\.1"),
        ({"stragglers": 1.5}, r"stragglers must be in \[0, 1\], got 1\.5"),
        ({"stragglers": float("nan")}, r"stragglers must be in \[0, 1\], got nan"),
        ({"policy": "wait"}, r"straggler policy must be one of \('keep', 'drop'\), got 'wait'"),
        ({"deadline_s": 0.0}, r"deadline_s must be > 0 seconds, got 0\.0"),
        ({"deadline_s": float("inf")}, r"deadline_s must be > 0 seconds, got inf"),
        ({"speed": 0.0}, r"speed must be > 0 steps per second, got 0\.0"),
        ({"speed": float("nan")}, r"speed must be > 0 steps per second, got nan"),
        ({"speed_spread": -1.0}, r"speed_spread must be >= 0, got -1\.0"),
    ],
)
def test_population_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Population(**kwargs)


def test_workload_validation_and_steps():
    with pytest.raises(ValueError, match=r"work fraction must be in \(0, 1\], got 0"):
        Instructions(fraction=0)
    with pytest.raises(ValueError, match=r"work fraction must be in \(0, 1\], got 1\.5"):
        Instructions(fraction=1.5)
    with pytest.raises(ValueError, match="max_steps must be >= 0, got -1"):
        Instructions(max_steps=-1)
    assert Instructions().steps(12) == 12
    assert Instructions(fraction=0.5).steps(12) == 6
    assert Instructions(fraction=2 / 3).steps(12) == 8
    assert Instructions(fraction=0.01).steps(12) == 1  # at least one step
    assert Instructions(fraction=0.5, max_steps=4).steps(12) == 4  # then the deadline
    assert Instructions(max_steps=20).steps(12) == 12
    assert Instructions(max_steps=0).steps(12) == 0
    assert local_steps(45, 10, 3) == 15 and local_steps(40, 10, 3) == 12


# -- workloads -------------------------------------------------------------------------------


def test_a_homogeneous_population_gives_no_workloads():
    rng = np.random.default_rng(0)
    assert Population().workloads(CLIENTS, epochs=3, seed=0, rng=rng) == {}
    assert Population(stragglers=0.5).workloads([], epochs=3, seed=0, rng=rng) == {}
    assert rng.random() == np.random.default_rng(0).random()  # nothing drawn


@pytest.mark.parametrize(("share", "count"), [(0.5, 10), (0.1, 2), (0.33, 7), (1.0, 20)])
def test_straggler_count_and_fractions_of_e_over_big_e(share, count):
    assert count == round(share * len(CLIENTS))
    pop = Population(stragglers=share)
    work = pop.workloads(CLIENTS, epochs=4, seed=0, rng=np.random.default_rng(5))
    assert len(work) == count and set(work) <= set(CLIENTS)
    assert {w.fraction for w in work.values()} <= {0.25, 0.5, 0.75}
    assert all(w.max_steps is None and not w.drop_partial for w in work.values())
    # every straggler does whole epochs, fewer than all of them
    for w in work.values():
        assert w.steps(4 * 7) in (7, 14, 21)


def test_fractions_cover_one_to_e_minus_one_epochs():
    pop = Population(stragglers=1.0)
    seen = set()
    for r in range(20):
        work = pop.workloads(CLIENTS, epochs=3, seed=0, rng=np.random.default_rng(r))
        seen |= {w.fraction for w in work.values()}
    assert seen == {1 / 3, 2 / 3}


def test_one_epoch_stragglers_do_part_of_it():
    pop = Population(stragglers=1.0)
    work = pop.workloads(CLIENTS, epochs=1, seed=0, rng=np.random.default_rng(1))
    fractions = np.array([w.fraction for w in work.values()])
    assert len(fractions) == 20 and (fractions > 0).all() and (fractions <= 1).all()
    assert len(set(fractions.tolist())) == 20  # continuous, not whole epochs
    assert any(Instructions(fraction=f).steps(10) < 10 for f in fractions)


def test_workloads_are_reproducible_from_the_round_generator():
    pop = Population(stragglers=0.3, policy="drop")
    a = pop.workloads(CLIENTS, epochs=5, seed=0, rng=np.random.default_rng(42))
    b = pop.workloads(CLIENTS, epochs=5, seed=0, rng=np.random.default_rng(42))
    c = pop.workloads(CLIENTS, epochs=5, seed=0, rng=np.random.default_rng(43))
    assert a == b and a != c
    assert all(w.drop_partial for w in a.values())
    # exactly this draw: the chosen clients in order, then one epoch count each
    rng = np.random.default_rng(42)
    chosen = np.sort(rng.choice(20, size=6, replace=False))
    expected = {CLIENTS[int(i)]: int(rng.integers(1, 5)) / 5 for i in chosen}
    assert {cid: w.fraction for cid, w in a.items()} == expected


def test_deadline_caps_every_client_at_its_device_speed():
    pop = Population(deadline_s=0.05, speed=100.0, speed_spread=0.5, stragglers=0.25)
    work = pop.workloads(CLIENTS, epochs=2, seed=7, rng=np.random.default_rng(0))
    assert set(work) == set(CLIENTS)  # with a deadline everyone has a cap
    for cid, w in work.items():
        assert w.max_steps == math.floor(0.05 * pop.device_speed(cid, 7))
    assert sum(w.fraction < 1 for w in work.values()) == 5  # the stragglers keep theirs
    assert {w.fraction for w in work.values()} <= {0.5, 1.0}
    caps = {w.max_steps for w in work.values()}
    assert len(caps) > 3  # devices differ


def test_device_speeds_are_fixed_per_client_and_seed():
    pop = Population(speed=100.0, speed_spread=0.5)
    speeds = [pop.device_speed(c, 3) for c in CLIENTS]
    assert speeds == [pop.device_speed(c, 3) for c in CLIENTS]  # stable
    assert speeds != [pop.device_speed(c, 4) for c in CLIENTS]  # the seed matters
    assert len(set(speeds)) == len(speeds)
    expected = [
        100.0 * math.exp(0.5 * np.random.default_rng([3, 9, client_key(c)]).standard_normal())
        for c in CLIENTS
    ]
    np.testing.assert_allclose(speeds, expected, rtol=1e-12)
    many = [pop.device_speed(f"d{i}", 3) for i in range(4000)]
    assert np.median(many) == pytest.approx(100.0, rel=0.05)  # log-normal around the median
    flat = Population(speed=50.0, speed_spread=0.0)
    assert {flat.device_speed(c, 3) for c in CLIENTS} == {50.0}


# -- the client round ------------------------------------------------------------------------

DATA = fedprox_synthetic(1, 1, num_devices=20, seed=1)
IDS = list(DATA.client_ids())
TRAINER = LogRegTrainer(60, 10)
MODEL_BYTES = len(encode_model(np.zeros(610, np.float32), None, None, np.random.default_rng(0)))


def task_of(params, *, round, seed, work):
    """Attempt 0 of ``round``: ``params`` as the (uncompressed) download, ``work`` per client."""
    model = encode_model(params, None, None, np.random.default_rng(0))
    return ClientTask(round=round, attempt=0, seed=seed, model=model, instructions=work)


def test_a_one_epoch_straggler_stops_mid_epoch_exactly_like_a_capped_fit():
    algo = fedavg(client_lr=0.05, local_epochs=1, batch_size=10)
    cid = IDS[3]
    n = DATA.load(cid).num_train
    total = local_steps(n, 10, 1)
    assert total > 3
    params = np.zeros(TRAINER.spec.size, np.float32)
    task = task_of(params, round=2, seed=5, work={cid: Instructions(0.4)})
    up = ClientRuntime(DATA, TRAINER, algo).handle(task, cid)
    assert isinstance(up, ClientReply)
    done = round(0.4 * total)
    assert up.metrics["steps"] == done < total
    assert up.metrics["work_fraction"] == done / total
    # the same numbers as the trainer stopped after `done` steps, from the client's generator
    rng = round_rng(5, 2, CLIENT_RNG, 0, client_key(cid))
    ds = DATA.load(cid)
    fit = TRAINER.fit(
        params, ds.x_train, ds.y_train, config=replace(algo.local, max_steps=done), rng=rng
    )
    np.testing.assert_array_equal(
        decode_reply(up, params.size, None, None).delta, fit.params - params
    )


def test_drop_policy_and_zero_step_deadlines_make_dropped_failures():
    algo = fedavg(client_lr=0.05, local_epochs=2, batch_size=10)
    params = np.zeros(TRAINER.spec.size, np.float32)
    cid = IDS[1]
    total = local_steps(DATA.load(cid).num_train, 10, 2)
    runtime = ClientRuntime(DATA, TRAINER, algo)
    for work in (Instructions(0.5, drop_partial=True), Instructions(max_steps=0)):
        task = task_of(params, round=0, seed=0, work={cid: work})
        res = runtime.handle(task, cid)
        assert isinstance(res, ClientFailure) and res.status == "dropped"
        assert res.reason is FailureReason.STRAGGLER
        assert (
            res.message
            == f"{STRAGGLER}: {work.steps(total)} of its {total} local steps done by the deadline"
        )
    # a drop-policy client that finishes everything in time is not a straggler
    task = task_of(params, round=0, seed=0, work={cid: Instructions(drop_partial=True)})
    up = runtime.handle(task, cid)
    assert isinstance(up, ClientReply) and up.metrics["steps"] == total
    assert "work_fraction" not in up.metrics


# -- the round loop --------------------------------------------------------------------------


class Recording:
    """The inline executor, remembering every round's task and results."""

    def __init__(self, inner):
        self.inner = inner
        self.rounds = []

    def map_clients(self, task, cohort):
        seen = []
        self.rounds.append((task, seen))
        for result in self.inner.map_clients(task, cohort):
            seen.append(result)
            yield result

    def close(self):
        self.inner.close()


def federation(tmp_path, population, *, epochs=3, rounds=3, cohort=10):
    """A federation whose clients run inline behind a :class:`Recording` (``fed.recording``)."""
    recordings = []

    def recording(fleet, stores):
        recordings.append(Recording(InlineExecutor(fleet, stores)))
        return recordings[-1]

    fed = simulate(
        recipe=functools.partial(
            fedprox, mu=0.01, client_lr=0.05, local_epochs=epochs, batch_size=20
        ),
        trainer=TRAINER,
        data=DATA,
        run_dir=tmp_path,
        rounds=rounds,
        cohort=CohortSpec(count=cohort),
        seed=4,
        population=population,
        executor=recording,
        sinks=RunSinks(run_id="", store=MemoryStore()),
        observer=NullObserver(),
    )
    (fed.recording,) = recordings
    return fed


def full_steps(cid, epochs=3):
    return local_steps(DATA.load(cid).num_train, 20, epochs)


def test_keep_uses_every_straggler_s_partial_work(tmp_path):
    fed = federation(tmp_path, Population(stragglers=0.5, policy="keep"))
    res = fed.run()
    for (task, results), record in zip(fed.recording.rounds, res.history, strict=True):
        assert len(task.instructions) == 5
        assert all(isinstance(r, ClientReply) for r in results) and len(results) == 10
        for r in results:
            full = full_steps(r.client_id)
            if r.client_id in task.instructions:
                done = task.instructions[r.client_id].steps(full)
                assert r.metrics["steps"] == done < full
                assert r.metrics["work_fraction"] == pytest.approx(done / full)
            else:
                assert r.metrics["steps"] == full and "work_fraction" not in r.metrics
        assert record["num_completed"] == 10 and record["num_dropped"] == 0
        assert record["num_stragglers"] == 5 and record["num_partial"] == 5
    rows = fed.sinks.store.read("client_updates")
    assert len(rows) == 30 and {r["status"] for r in rows} == {"accepted"}


def test_drop_discards_stragglers_with_a_straggler_reason(tmp_path):
    fed = federation(tmp_path, Population(stragglers=0.5, policy="drop"))
    res = fed.run()
    rows = fed.sinks.store.read("client_updates")
    for (task, results), record in zip(fed.recording.rounds, res.history, strict=True):
        late = set(task.instructions)
        assert len(late) == 5
        for r in results:
            if r.client_id in late:
                assert isinstance(r, ClientFailure) and r.status == "dropped"
                assert r.reason is FailureReason.STRAGGLER
            else:
                assert isinstance(r, ClientReply) and r.metrics["steps"] == full_steps(r.client_id)
        mine = [row for row in rows if row["round"] == record["round"]]
        dropped = {row["client_id"] for row in mine if row["status"] == "dropped"}
        assert dropped == late
        assert all(
            row["reason"].startswith(STRAGGLER) and row["bytes"] == 0
            for row in mine
            if row["status"] == "dropped"
        )
        assert record["num_completed"] == 5 and record["num_dropped"] == 5
        assert record["num_stragglers"] == 5 and record["num_partial"] == 0
        # stragglers got the model (they trained): their download counts, unlike dropouts'
        assert record["bytes_down"] == 10 * MODEL_BYTES
        assert all(row["bytes_down"] == MODEL_BYTES for row in mine)


def test_dropouts_are_not_stragglers(tmp_path):
    pop = Population(dropout=0.3, stragglers=0.5, policy="drop")
    fed = federation(tmp_path, pop, rounds=3)
    res = fed.run()
    rows = fed.sinks.store.read("client_updates")
    for (task, results), record in zip(fed.recording.rounds, res.history, strict=True):
        mine = [row for row in rows if row["round"] == record["round"]]
        gone = [row for row in mine if row["reason"] == "unavailable (simulated dropout)"]
        active = 10 - len(gone)
        assert len(results) == active and len(task.instructions) == round(0.5 * active)
        assert all(row["status"] == "dropped" and row["bytes_down"] == 0 for row in gone)
        assert record["num_dropped"] == len(gone) + len(task.instructions)
        assert record["num_stragglers"] == len(task.instructions) and record["num_partial"] == 0
        assert record["num_completed"] == active - len(task.instructions)
        assert record["bytes_down"] == active * MODEL_BYTES
    assert sum(len(results) for _, results in fed.recording.rounds) < 30  # some dropped out


def test_keep_and_drop_differ_only_in_the_stragglers(tmp_path):
    keep = federation(tmp_path / "keep", Population(stragglers=0.5, policy="keep"), rounds=1)
    drop = federation(tmp_path / "drop", Population(stragglers=0.5, policy="drop"), rounds=1)
    keep.run()
    drop.run()
    (kt, kres), (dt, dres) = keep.recording.rounds[0], drop.recording.rounds[0]
    assert set(kt.instructions) == set(dt.instructions)  # the same stragglers: same round generator
    for k, d in zip(kres, dres, strict=True):
        if k.client_id not in kt.instructions:
            assert k.payloads == d.payloads  # the finishers computed the same update


def test_deadline_in_the_round_loop(tmp_path):
    pop = Population(deadline_s=0.1, speed=60.0, speed_spread=0.8, policy="keep")
    fed = federation(tmp_path, pop, rounds=2)
    res = fed.run()
    for (task, results), record in zip(fed.recording.rounds, res.history, strict=True):
        capped = partial = dropped = 0
        for r in results:
            cap = math.floor(0.1 * pop.device_speed(r.client_id, 4))
            assert task.instructions[r.client_id].max_steps == cap
            full = full_steps(r.client_id)
            if cap == 0:
                assert isinstance(r, ClientFailure) and r.reason is FailureReason.STRAGGLER
                assert r.message.startswith(STRAGGLER)
                dropped += 1
            else:
                assert r.metrics["steps"] == min(cap, full)
                capped += cap < full
                partial += "work_fraction" in r.metrics
        assert partial == capped > 0
        assert record["num_partial"] == partial
        assert record["num_stragglers"] == partial + dropped


def test_ninety_percent_stragglers_still_train_either_way(tmp_path):
    losses = {}
    for policy in ("keep", "drop"):
        fed = federation(
            tmp_path / policy, Population(stragglers=0.9, policy=policy), rounds=4, epochs=2
        )
        res = fed.run()
        assert np.isfinite(res.state.params).all()
        assert all(np.isfinite(h["eval_loss"]) for h in res.history)
        expected = (10, 9) if policy == "keep" else (1, 0)
        assert {(h["num_completed"], h["num_partial"]) for h in res.history} == {expected}
        assert {h["num_stragglers"] for h in res.history} == {9}
        losses[policy] = res.history[-1]["eval_loss"]
    # zero params predict uniformly (log 10); keeping the partial work learns, and beats
    # training on the one finisher per round (FedProx's finding, Li et al. 2020, Fig. 1)
    assert losses["keep"] < math.log(10) - 0.5
    assert losses["keep"] < losses["drop"] - 0.5
