"""The vectorised client runtime computes what one-client-at-a-time runs compute.

``ClientRuntime.handle_many`` trains a cohort as one stacked logistic regression;
``ClientRuntime.handle`` runs one client. Simulated federations with ``vectorize`` on
(the inline executor's chunks go through ``handle_many``) and off (``handle``, one by
one) must give the same rounds (to float tolerance), the same client states, and the
same failures, client by client.
"""

import functools

import numpy as np
import pytest

import fedlake.client.logreg_kernel as logreg_kernel
import fedlake.client.runtime as runtime_module
from fedlake.algorithms import compressed, fedavg, fednova, fedprox, personalized, scaffold
from fedlake.client.fleet import ClientFleet
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.stores import MemoryStateStore
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.compression.wire import read_header
from fedlake.core.personal import Personalization, personal_mask
from fedlake.core.state import init_server_state, task_extras
from fedlake.core.task import ClientFailure, ClientReply, ClientTask, FailureReason
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration.checkpoint import load_checkpoint
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.sampling import CohortSpec
from fedlake.simulation import Population, SimulatedStores, simulate

DATA = fedprox_synthetic(1, 1, num_devices=20, seed=1)
IDS = list(DATA.client_ids())
TRAINER = LogRegTrainer(60, 10)
DIM = TRAINER.spec.size
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def shared_fits(monkeypatch):
    """Counts the cohorts trained as one stacked fit (to prove the fast path ran).

    Plain logistic regression trains fastest one by one (its compiled loop): these tests
    turn that loop off so the stacked numpy path is the one exercised.
    """
    monkeypatch.setattr(logreg_kernel, "AVAILABLE", False)
    calls = []
    real = runtime_module.fit_cohort

    def spy(trainer, params, data, **kw):
        calls.append(len(data))  # counted even when the shared fit raises
        out = real(trainer, params, data, **kw)
        if out is None:
            calls[-1] = None
        return out

    monkeypatch.setattr(runtime_module, "fit_cohort", spy)
    return calls


def ditto(**kw):
    """FedAvg whose clients also train a personal Ditto model (picklable by name)."""
    return personalized(fedavg(**kw), Personalization("ditto", lam=0.5))


def pruned_fedavg(**kw):
    """FedAvg on a model pruned to half its weights from round 2 on (picklable by name)."""
    return compressed(fedavg(**kw), prune={"sparsity": 0.5, "start_round": 1})


RECIPES = {
    "fedavg": functools.partial(fedavg, client_lr=0.05, local_epochs=2, batch_size=20),
    "ditto": functools.partial(ditto, client_lr=0.05, local_epochs=2, batch_size=20),
    "fedprox": functools.partial(fedprox, mu=0.1, client_lr=0.05, local_epochs=2, batch_size=20),
    "scaffold": functools.partial(scaffold, client_lr=0.05, local_epochs=2, batch_size=20),
    "pruned": functools.partial(pruned_fedavg, client_lr=0.05, local_epochs=2, batch_size=20),
}


def run(tmp_path, make_algorithm, *, vectorize, population=None, rounds=3, data=DATA):
    """A simulated federation run inline, vectorised or one client at a time."""
    fed = simulate(
        recipe=make_algorithm,
        trainer=TRAINER,
        data=data,
        run_dir=tmp_path,
        rounds=rounds,
        cohort=CohortSpec(count=10),
        seed=8,
        population=population or Population(),
        executor="inline",
        vectorize=vectorize,
        observer=NullObserver(),
    )
    return fed.run(), load_checkpoint(tmp_path)


def client_records(ckpt):
    """The simulated clients' records as the checkpoint saved them (by client id)."""
    stores = SimulatedStores()
    stores.restore(ckpt.components[stores.name])
    return stores.records


def assert_same_states(a, b, name, rtol=1e-3, atol=1e-4):
    """Plugin ``name``'s state in two clients' records: committed and pending alike."""
    committed_a = (a.get("states") or {}).get(name)
    committed_b = (b.get("states") or {}).get(name)
    assert (committed_a is None) == (committed_b is None)
    if committed_a is not None:
        np.testing.assert_allclose(committed_a, committed_b, rtol=rtol, atol=atol)
    pending_a, pending_b = a.get("pending"), b.get("pending")
    assert (pending_a is None) == (pending_b is None)
    if pending_a is not None:
        assert pending_a["tag"] == pending_b["tag"]
        assert set(pending_a["states"]) == set(pending_b["states"])
        for key, value in pending_a["states"].items():
            np.testing.assert_allclose(value, pending_b["states"][key], rtol=rtol, atol=atol)
    return committed_a is not None or pending_a is not None


def assert_same_runs(a, b):
    (res_a, ckpt_a), (res_b, ckpt_b) = a, b
    np.testing.assert_allclose(res_a.state.params, res_b.state.params, rtol=RTOL, atol=ATOL)
    assert [h["cohort"] for h in res_a.history] == [h["cohort"] for h in res_b.history]
    for ha, hb in zip(res_a.history, res_b.history, strict=True):
        for key in ("num_completed", "num_dropped", "num_failed", "bytes_up"):
            assert ha[key] == hb[key], key
        assert ha["eval_loss"] == pytest.approx(hb["eval_loss"], rel=1e-5)
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)
    assert set(client_records(ckpt_a)) == set(client_records(ckpt_b))
    return res_a, ckpt_a


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_vectorised_rounds_match_one_by_one(tmp_path, shared_fits, name):
    fast = run(tmp_path / "fast", RECIPES[name], vectorize=True)
    assert shared_fits == [10, 10, 10]  # every round's cohort trained as one stacked fit
    slow = run(tmp_path / "slow", RECIPES[name], vectorize=False)
    assert shared_fits == [10, 10, 10]  # one by one never stacks
    res, ckpt = assert_same_runs(fast, slow)
    assert np.abs(res.state.params).max() > 0.01  # it trained
    kept, kept_slow = client_records(ckpt), client_records(slow[1])
    if name == "scaffold":  # control variates carried across rounds agree client by client
        np.testing.assert_allclose(
            res.state.plugins["scaffold"],
            slow[0].state.plugins["scaffold"],
            rtol=RTOL,
            atol=ATOL,
        )
        assert len(kept) > 10  # some clients came back in later rounds
        for cid, record in kept.items():
            assert assert_same_states(record, kept_slow[cid], "scaffold")
    if name == "ditto":  # the personal models, trained after the shared fit, agree too
        assert len(kept) > 10
        for cid, record in kept.items():
            assert "pending" not in record and "pending" not in kept_slow[cid]
            assert assert_same_states(record, kept_slow[cid], "ditto")
    if name == "pruned":
        assert (res.state.params == 0).mean() >= 0.5


def test_vectorised_stragglers_keep_their_partial_work(tmp_path, shared_fits):
    pop = Population(stragglers=0.5, policy="keep")
    make = functools.partial(fedprox, mu=0.1, client_lr=0.05, local_epochs=3, batch_size=20)
    fast = run(tmp_path / "fast", make, vectorize=True, population=pop)
    slow = run(tmp_path / "slow", make, vectorize=False, population=pop)
    assert shared_fits == [10, 10, 10]
    res, _ = assert_same_runs(fast, slow)
    assert {h["num_partial"] for h in res.history} == {5}


def test_vectorised_fednova_with_stragglers(tmp_path, shared_fits):
    pop = Population(stragglers=0.5, policy="keep")
    make = functools.partial(fednova, mu=0.1, client_lr=0.05, local_epochs=3, batch_size=20)
    fast = run(tmp_path / "fast", make, vectorize=True, population=pop)
    slow = run(tmp_path / "slow", make, vectorize=False, population=pop)
    assert shared_fits == [10, 10, 10]
    assert_same_runs(fast, slow)


def test_vectorised_scaffold_with_stragglers(tmp_path, shared_fits):
    pop = Population(stragglers=0.3, policy="keep")
    fast = run(tmp_path / "fast", RECIPES["scaffold"], vectorize=True, population=pop)
    slow = run(tmp_path / "slow", RECIPES["scaffold"], vectorize=False, population=pop)
    assert shared_fits == [10, 10, 10]
    res, _ = assert_same_runs(fast, slow)
    np.testing.assert_allclose(
        res.state.plugins["scaffold"], slow[0].state.plugins["scaffold"], rtol=RTOL, atol=ATOL
    )
    assert {h["num_partial"] for h in res.history} == {3}


# -- failures stay each client's own ---------------------------------------------------------


def with_clients(extra):
    """The synthetic clients plus ``extra`` ones ({id: ClientDataset})."""
    return InMemoryClientData({**{c: DATA.load(c) for c in IDS}, **extra})


def empty_client():
    x = np.zeros((0, 60), np.float32)
    y = np.zeros(0, np.int64)
    return ClientDataset(x, y, DATA.load(IDS[0]).x_test, DATA.load(IDS[0]).y_test)


def bad_labels():
    ds = DATA.load(IDS[2])
    return ClientDataset(ds.x_train, np.full_like(ds.y_train, 10), ds.x_test, ds.y_test)


def nan_features():
    ds = DATA.load(IDS[4])
    x = ds.x_train.copy()
    x[0, 0] = np.nan
    return ClientDataset(x, ds.y_train, ds.x_test, ds.y_test)


class Both:
    """Two runtimes over the same fleet, each with its own store: one vectorised
    (``handle_many``), one answering client after client (``handle``)."""

    def __init__(self, data, make_algorithm):
        self.fleet = ClientFleet(data, TRAINER, make_algorithm)
        self.fast_store, self.slow_store = MemoryStateStore(), MemoryStateStore()
        self.fast = self.fleet.runtime(self.fast_store)
        self.slow = self.fleet.runtime(self.slow_store)

    @property
    def algorithm(self):
        return self.fleet.algorithm

    def results(self, task, cohort):
        fast = self.fast.handle_many(task, cohort)
        slow = [self.slow.handle(task, cid) for cid in cohort]
        assert [r.client_id for r in fast] == cohort == [r.client_id for r in slow]
        return fast, slow


def delta_of(reply, mask=None):
    """The delta the server reads from a (float32) reply."""
    return decode_reply(reply, DIM, mask, None).delta


def assert_same_results(fast, slow):
    for f, s in zip(fast, slow, strict=True):
        assert type(f) is type(s), (f, s)
        if isinstance(f, ClientFailure):
            assert (f.status, f.reason, f.message) == (s.status, s.reason, s.message)
        else:
            np.testing.assert_allclose(delta_of(f), delta_of(s), rtol=RTOL, atol=ATOL)
            assert f.metrics["steps"] == s.metrics["steps"] and f.weight == s.weight


def task_for(algo, params=None, **kw):
    """Round 0's task: the encoded initial model and the server plugins' extras."""
    state = init_server_state(algo, TRAINER.init_params(0) if params is None else params, seed=1)
    model = encode_model(state.params, None, algo.compression.download, np.random.default_rng(0))
    return ClientTask(
        round=0, attempt=0, seed=1, model=model, extras=task_extras(algo, state), **kw
    )


def test_a_client_without_training_data_fails_alone(shared_fits):
    data = with_clients({"empty": empty_client()})
    both = Both(data, RECIPES["fedavg"])
    cohort = [IDS[0], "empty", IDS[1], IDS[2]]
    fast, slow = both.results(task_for(both.algorithm), cohort)
    assert shared_fits == [3]  # the three others still trained together
    assert isinstance(fast[1], ClientFailure) and fast[1].status == "failed"
    assert fast[1].reason is FailureReason.ERROR
    assert fast[1].message == "ValueError: client 'empty' has no training examples"
    assert all(isinstance(r, ClientReply) for i, r in enumerate(fast) if i != 1)
    assert_same_results(fast, slow)


def test_an_unknown_client_fails_alone():
    both = Both(DATA, RECIPES["fedprox"])
    cohort = [IDS[0], "nobody", IDS[1]]
    fast, slow = both.results(task_for(both.algorithm), cohort)
    assert isinstance(fast[1], ClientFailure) and "nobody" in fast[1].message
    assert fast[1].reason is FailureReason.ERROR
    assert_same_results(fast, slow)


def test_a_failing_shared_fit_reruns_everyone_alone(shared_fits):
    # labels out of range make the stacked fit raise; each client then runs alone, so
    # only the culprit fails and the others get exactly their one-by-one numbers
    data = with_clients({"bad": bad_labels()})
    both = Both(data, RECIPES["scaffold"])
    cohort = [IDS[0], IDS[1], "bad", IDS[3]]
    fast, slow = both.results(task_for(both.algorithm), cohort)
    assert shared_fits == [4]  # tried once, together
    assert isinstance(fast[2], ClientFailure) and "labels must be in [0, 10)" in fast[2].message
    assert_same_results(fast, slow)
    for f, s in zip(fast, slow, strict=True):
        fast_record = both.fast_store.load(f.client_id)
        slow_record = both.slow_store.load(s.client_id)
        if isinstance(f, ClientReply):  # rerun from fresh generators: bit-identical
            assert f.payloads == s.payloads
            assert set(f.payloads) == {"delta", "control"}
            assert fast_record["pending"]["tag"] == slow_record["pending"]["tag"] == (0, 0)
            np.testing.assert_array_equal(
                fast_record["pending"]["states"]["scaffold"],
                slow_record["pending"]["states"]["scaffold"],
            )
        else:  # a failed client keeps nothing of the round
            assert fast_record is None and slow_record is None


def test_a_diverging_client_fails_in_finishing_without_spoiling_the_others(shared_fits):
    data = with_clients({"nan": nan_features()})
    both = Both(data, RECIPES["fedavg"])
    cohort = [IDS[0], "nan", IDS[1]]
    fast, slow = both.results(task_for(both.algorithm), cohort)
    assert shared_fits == [3]  # NaNs stay in their own row of the stacked fit
    assert isinstance(fast[1], ClientFailure) and "non-finite" in fast[1].message
    assert_same_results(fast, slow)


def test_a_run_with_a_failing_client_matches_one_by_one(tmp_path):
    data = with_clients({"empty": empty_client()})
    fast = run(tmp_path / "fast", RECIPES["fedavg"], vectorize=True, data=data)
    slow = run(tmp_path / "slow", RECIPES["fedavg"], vectorize=False, data=data)
    res, _ = assert_same_runs(fast, slow)
    assert sum(h["num_failed"] for h in res.history) >= 1  # "empty" was sampled and failed


# -- FedPer: per-client starts, so one by one ------------------------------------------------


def fedper(**kw):
    return personalized(fedavg(**kw), Personalization("fedper", layers=("bias",)))


def shared_delta(reply, personal):
    """The full-length delta the server reads from a FedPer upload (personal positions 0).

    The upload carries only the shared positions: nothing of the personal layers is in it.
    """
    header, _ = read_header(reply.payloads["delta"])
    assert header.dim == int((~personal).sum())
    return delta_of(reply, ~personal)


def test_fedper_falls_back_to_one_by_one_and_keeps_personal_layers(shared_fits):
    both = Both(DATA, functools.partial(fedper, client_lr=0.05, batch_size=20))
    personal = personal_mask(TRAINER.spec, ("bias",))
    assert personal[-10:].all() and personal.sum() == 10
    np.testing.assert_array_equal(both.algorithm.kept_local(TRAINER.spec), personal)
    cohort = IDS[:5]
    params = TRAINER.init_params(0)
    for r in range(2):
        model = encode_model(params, None, None, np.random.default_rng(r))
        task = ClientTask(round=r, attempt=0, seed=1, model=model)
        fast, slow = both.results(task, cohort)
        assert shared_fits == []  # per-client starts: never stacked
        deltas = []
        for f, s in zip(fast, slow, strict=True):
            assert isinstance(f, ClientReply) and f.payloads == s.payloads
            np.testing.assert_array_equal(
                both.fast_store.load(f.client_id)["states"]["fedper"],
                both.slow_store.load(s.client_id)["states"]["fedper"],
            )
            delta = shared_delta(f, personal)
            assert (delta[personal] == 0).all() and np.abs(delta[~personal]).max() > 0
            deltas.append(delta)
        params = params + np.mean(deltas, axis=0)
    # the clients trained their own biases, each kept on its device
    own = {cid: both.fast_store.load(cid)["states"]["fedper"] for cid in cohort}
    assert len({v.tobytes() for v in own.values()}) == len(cohort)
    assert all(np.abs(v).max() > 0 for v in own.values())


# -- the compiled logistic-regression cohort (plain recipes: no local step) ---------------


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "scaffold"])
def test_compiled_cohort_equals_one_by_one_bit_for_bit(tmp_path, name):
    assert logreg_kernel.AVAILABLE  # numba is a dependency
    population = Population(stragglers=0.5)  # partial work too
    fast = run(tmp_path / "fast", RECIPES[name], vectorize=True, population=population)
    slow = run(tmp_path / "slow", RECIPES[name], vectorize=False, population=population)
    # each client runs the same compiled loop (its proximal term and SCAFFOLD correction
    # inside it) on the same draws, only on a thread pool
    assert fast[0].state.params.tobytes() == slow[0].state.params.tobytes()
    if name == "scaffold":
        fast_c, slow_c = fast[0].state.plugins["scaffold"], slow[0].state.plugins["scaffold"]
        assert fast_c.tobytes() == slow_c.tobytes()


def test_compiled_cohort_isolates_bad_clients():
    data = with_clients({"bad": bad_labels(), "nan": nan_features()})
    both = Both(data, RECIPES["fedavg"])
    cohort = [IDS[0], "bad", IDS[1], "nan", IDS[3]]
    fast, slow = both.results(task_for(both.algorithm), cohort)
    assert isinstance(fast[1], ClientFailure) and "labels must be in [0, 10)" in fast[1].message
    assert isinstance(fast[3], ClientFailure) and "diverged" in fast[3].message
    for f, s in zip(fast, slow, strict=True):
        assert type(f) is type(s)
        if isinstance(f, ClientReply):
            assert f.payloads == s.payloads


def test_a_forked_child_gets_its_own_thread_pool():
    import multiprocessing as mp

    x = np.random.default_rng(0).normal(size=(40, 60)).astype(np.float32)
    y = np.arange(40) % 10
    from fedlake.core.algorithm import LocalConfig

    cfg = LocalConfig(epochs=1, batch_size=10, lr=0.1)
    jobs = [
        TRAINER.compiled_job(np.zeros(610, np.float32), x, y, cfg, np.random.default_rng(i))
        for i in range(4)
    ]
    logreg_kernel.run_many(jobs)  # the parent's pool exists now
    ctx = mp.get_context("fork")
    child = ctx.Process(target=logreg_kernel.run_many, args=(jobs,))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
