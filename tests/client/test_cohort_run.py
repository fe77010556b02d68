"""The vectorised inline executor computes what one-client-at-a-time runs compute.

``InlineExecutor()`` trains each chunk of the cohort as one stacked logistic regression;
``InlineExecutor(chunk=1)`` runs :func:`fedlake.client.local.run_client` per client. Both
must give the same rounds (to float tolerance), the same client states, and the same
failures, client by client.
"""

import functools

import numpy as np
import pytest
from toy import _dim, decoded

import fedlake.client.cohort_run as cohort_run
import fedlake.client.logreg_kernel as logreg_kernel
from fedlake.algorithms import fedavg, fednova, fedprox, personalized, scaffold
from fedlake.backends.inline import InlineExecutor
from fedlake.client.local import ClientFailure, ClientJob, ClientTask
from fedlake.client.logreg import LogRegTrainer
from fedlake.compression.pipeline import compressed
from fedlake.core.personal import Personalization, personal_mask
from fedlake.core.state import init_server_state
from fedlake.core.update import CONTROL, ClientUpdate
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration.checkpoint import load_checkpoint
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.federation import Federation
from fedlake.orchestration.sampling import CohortSpec, Population
from fedlake.personal.client import PERSONAL

DATA = fedprox_synthetic(1, 1, num_devices=20, seed=1)
IDS = list(DATA.client_ids())
TRAINER = LogRegTrainer(60, 10)
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def shared_fits(monkeypatch):
    """Counts the cohorts trained as one stacked fit (to prove the fast path ran).

    Plain logistic regression trains fastest one by one (its compiled loop): these tests
    turn that loop off so the stacked numpy path is the one exercised.
    """
    monkeypatch.setattr(logreg_kernel, "AVAILABLE", False)
    calls = []
    real = cohort_run.fit_cohort

    def spy(trainer, params, data, **kw):
        calls.append(len(data))  # counted even when the shared fit raises
        out = real(trainer, params, data, **kw)
        if out is None:
            calls[-1] = None
        return out

    monkeypatch.setattr(cohort_run, "fit_cohort", spy)
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


def run(tmp_path, make_algorithm, executor, *, population=None, rounds=3, data=DATA):
    fed = Federation(
        make_algorithm=make_algorithm,
        trainer=TRAINER,
        data=data,
        run_dir=tmp_path,
        rounds=rounds,
        cohort=CohortSpec(count=10),
        seed=8,
        population=population or Population(),
        executor=executor,
        observer=NullObserver(),
    )
    return fed.run(), load_checkpoint(tmp_path)


def assert_same_runs(a, b):
    (res_a, ckpt_a), (res_b, ckpt_b) = a, b
    np.testing.assert_allclose(res_a.state.params, res_b.state.params, rtol=RTOL, atol=ATOL)
    assert [h["cohort"] for h in res_a.history] == [h["cohort"] for h in res_b.history]
    for ha, hb in zip(res_a.history, res_b.history, strict=True):
        for key in ("num_completed", "num_dropped", "num_failed", "bytes_up"):
            assert ha[key] == hb[key], key
        assert ha["eval_loss"] == pytest.approx(hb["eval_loss"], rel=1e-5)
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)
    assert set(ckpt_a.client_states) == set(ckpt_b.client_states)
    return res_a, ckpt_a


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_vectorised_rounds_match_one_by_one(tmp_path, shared_fits, name):
    fast = run(tmp_path / "fast", RECIPES[name], InlineExecutor())
    assert shared_fits == [10, 10, 10]  # every round's cohort trained as one stacked fit
    slow = run(tmp_path / "slow", RECIPES[name], InlineExecutor(chunk=1))
    assert shared_fits == [10, 10, 10]  # chunk=1 never stacks
    res, ckpt = assert_same_runs(fast, slow)
    assert np.abs(res.state.params).max() > 0.01  # it trained
    if name == "scaffold":  # control variates carried across rounds agree client by client
        np.testing.assert_allclose(res.state.control, slow[0].state.control, rtol=RTOL, atol=ATOL)
        assert len(ckpt.client_states) > 10  # some clients came back in later rounds
        for cid, kept in ckpt.client_states.items():
            np.testing.assert_allclose(
                kept[CONTROL], slow[1].client_states[cid][CONTROL], rtol=1e-3, atol=1e-4
            )
    if name == "ditto":  # the personal models, trained after the shared fit, agree too
        assert len(ckpt.client_states) > 10
        for cid, kept in ckpt.client_states.items():
            np.testing.assert_allclose(
                kept[PERSONAL], slow[1].client_states[cid][PERSONAL], rtol=1e-3, atol=1e-4
            )
    if name == "pruned":
        assert (res.state.params == 0).mean() >= 0.5


def test_vectorised_stragglers_keep_their_partial_work(tmp_path, shared_fits):
    pop = Population(stragglers=0.5, policy="keep")
    make = functools.partial(fedprox, mu=0.1, client_lr=0.05, local_epochs=3, batch_size=20)
    fast = run(tmp_path / "fast", make, InlineExecutor(), population=pop)
    slow = run(tmp_path / "slow", make, InlineExecutor(chunk=1), population=pop)
    assert shared_fits == [10, 10, 10]
    res, _ = assert_same_runs(fast, slow)
    assert {h["num_partial"] for h in res.history} == {5}


def test_vectorised_fednova_with_stragglers(tmp_path, shared_fits):
    pop = Population(stragglers=0.5, policy="keep")
    make = functools.partial(fednova, mu=0.1, client_lr=0.05, local_epochs=3, batch_size=20)
    fast = run(tmp_path / "fast", make, InlineExecutor(), population=pop)
    slow = run(tmp_path / "slow", make, InlineExecutor(chunk=1), population=pop)
    assert shared_fits == [10, 10, 10]
    assert_same_runs(fast, slow)


def test_vectorised_scaffold_with_stragglers(tmp_path, shared_fits):
    pop = Population(stragglers=0.3, policy="keep")
    fast = run(tmp_path / "fast", RECIPES["scaffold"], InlineExecutor(), population=pop)
    slow = run(tmp_path / "slow", RECIPES["scaffold"], InlineExecutor(chunk=1), population=pop)
    assert shared_fits == [10, 10, 10]
    res, _ = assert_same_runs(fast, slow)
    np.testing.assert_allclose(res.state.control, slow[0].state.control, rtol=RTOL, atol=ATOL)
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


def results_both_ways(job, task, cohort):
    fast = job.run_many(task, cohort)
    slow = [job.run(task, cid) for cid in cohort]
    assert [r.client_id for r in fast] == cohort == [r.client_id for r in slow]
    return fast, slow


def assert_same_results(fast, slow):
    for f, s in zip(fast, slow, strict=True):
        assert type(f) is type(s), (f, s)
        if isinstance(f, ClientFailure):
            assert (f.status, f.reason) == (s.status, s.reason)
        else:
            np.testing.assert_allclose(decoded(f).delta, decoded(s).delta, rtol=RTOL, atol=ATOL)
            assert f.metrics["steps"] == s.metrics["steps"] and f.weight == s.weight


def task_for(algo, params=None, **kw):
    state = init_server_state(algo, TRAINER.init_params(0) if params is None else params, seed=1)
    return ClientTask(round=0, attempt=0, params=state.params, seed=1, control=state.control, **kw)


def test_a_client_without_training_data_fails_alone(shared_fits):
    data = with_clients({"empty": empty_client()})
    job = ClientJob(data, TRAINER, RECIPES["fedavg"])
    cohort = [IDS[0], "empty", IDS[1], IDS[2]]
    fast, slow = results_both_ways(job, task_for(job.algorithm), cohort)
    assert shared_fits == [3]  # the three others still trained together
    assert isinstance(fast[1], ClientFailure) and fast[1].status == "failed"
    assert fast[1].reason == "ValueError: client 'empty' has no training examples"
    assert all(isinstance(r, ClientUpdate) for i, r in enumerate(fast) if i != 1)
    assert_same_results(fast, slow)


def test_an_unknown_client_fails_alone():
    job = ClientJob(DATA, TRAINER, RECIPES["fedprox"])
    cohort = [IDS[0], "nobody", IDS[1]]
    fast, slow = results_both_ways(job, task_for(job.algorithm), cohort)
    assert isinstance(fast[1], ClientFailure) and "nobody" in fast[1].reason
    assert_same_results(fast, slow)


def test_a_failing_shared_fit_reruns_everyone_alone(shared_fits):
    # labels out of range make the stacked fit raise; each client then runs alone, so
    # only the culprit fails and the others get exactly their one-by-one numbers
    data = with_clients({"bad": bad_labels()})
    job = ClientJob(data, TRAINER, RECIPES["scaffold"])
    cohort = [IDS[0], IDS[1], "bad", IDS[3]]
    fast, slow = results_both_ways(job, task_for(job.algorithm), cohort)
    assert shared_fits == [4]  # tried once, together
    assert isinstance(fast[2], ClientFailure) and "labels must be in [0, 10)" in fast[2].reason
    assert_same_results(fast, slow)
    for f, s in zip(fast, slow, strict=True):
        if isinstance(f, ClientUpdate):  # rerun from fresh generators: bit-identical
            assert f.encoded == s.encoded
            np.testing.assert_array_equal(f.client_state[CONTROL], s.client_state[CONTROL])


def test_a_diverging_client_fails_in_finishing_without_spoiling_the_others(shared_fits):
    data = with_clients({"nan": nan_features()})
    job = ClientJob(data, TRAINER, RECIPES["fedavg"])
    cohort = [IDS[0], "nan", IDS[1]]
    fast, slow = results_both_ways(job, task_for(job.algorithm), cohort)
    assert shared_fits == [3]  # NaNs stay in their own row of the stacked fit
    assert isinstance(fast[1], ClientFailure) and "non-finite" in fast[1].reason
    assert_same_results(fast, slow)


def test_a_run_with_a_failing_client_matches_one_by_one(tmp_path):
    data = with_clients({"empty": empty_client()})
    fast = run(tmp_path / "fast", RECIPES["fedavg"], InlineExecutor(), data=data)
    slow = run(tmp_path / "slow", RECIPES["fedavg"], InlineExecutor(chunk=1), data=data)
    res, _ = assert_same_runs(fast, slow)
    assert sum(h["num_failed"] for h in res.history) >= 1  # "empty" was sampled and failed


# -- FedPer: per-client starts, so one by one ------------------------------------------------


def fedper(**kw):
    return personalized(fedavg(**kw), Personalization("fedper", layers=("bias",)))


def shared_delta(update, personal):
    """The full-length delta the server reads from a FedPer upload (personal positions 0).

    An upload may carry every position (zeros on the personal ones) or only the shared
    ones; either way nothing of the personal layers is in it.
    """
    dim = personal.size
    if _dim(update) == dim:
        return decoded(update, dim).delta
    assert _dim(update) == int((~personal).sum())
    return decoded(update, dim, ~personal).delta


def test_fedper_falls_back_to_one_by_one_and_keeps_personal_layers(shared_fits):
    job = ClientJob(DATA, TRAINER, functools.partial(fedper, client_lr=0.05, batch_size=20))
    personal = personal_mask(TRAINER.spec, ("bias",))
    assert personal[-10:].all() and personal.sum() == 10
    cohort = IDS[:5]
    states = {}
    params = TRAINER.init_params(0)
    for r in range(2):
        task = ClientTask(round=r, attempt=0, params=params, seed=1, states=dict(states))
        fast, slow = results_both_ways(job, task, cohort)
        assert shared_fits == []  # per-client starts: never stacked
        deltas = []
        for f, s in zip(fast, slow, strict=True):
            assert isinstance(f, ClientUpdate) and f.encoded == s.encoded
            np.testing.assert_array_equal(f.client_state[PERSONAL], s.client_state[PERSONAL])
            delta = shared_delta(f, personal)
            assert (delta[personal] == 0).all() and np.abs(delta[~personal]).max() > 0
            deltas.append(delta)
            states[f.client_id] = f.client_state
        params = params + np.mean(deltas, axis=0)
    # the clients trained their own biases, each kept on its device
    own = {cid: states[cid][PERSONAL] for cid in cohort}
    assert len({v.tobytes() for v in own.values()}) == len(cohort)
    assert all(np.abs(v).max() > 0 for v in own.values())


# -- the compiled logistic-regression cohort (plain recipes: no local step) ---------------


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "scaffold"])
def test_compiled_cohort_equals_one_by_one_bit_for_bit(tmp_path, name):
    assert logreg_kernel.AVAILABLE  # numba is a dependency
    population = Population(stragglers=0.5)  # partial work too
    fast = run(tmp_path / "fast", RECIPES[name], InlineExecutor(), population=population)
    slow = run(tmp_path / "slow", RECIPES[name], InlineExecutor(chunk=1), population=population)
    # each client runs the same compiled loop (its proximal term and SCAFFOLD correction
    # inside it) on the same draws, only on a thread pool
    assert fast[0].state.params.tobytes() == slow[0].state.params.tobytes()
    if name == "scaffold":
        assert fast[0].state.control.tobytes() == slow[0].state.control.tobytes()


def test_compiled_cohort_isolates_bad_clients():
    data = with_clients({"bad": bad_labels(), "nan": nan_features()})
    job = ClientJob(data, TRAINER, RECIPES["fedavg"])
    cohort = [IDS[0], "bad", IDS[1], "nan", IDS[3]]
    fast, slow = results_both_ways(job, task_for(job.algorithm), cohort)
    assert isinstance(fast[1], ClientFailure) and "labels must be in [0, 10)" in fast[1].reason
    assert isinstance(fast[3], ClientFailure) and "diverged" in fast[3].reason
    for f, s in zip(fast, slow, strict=True):
        assert type(f) is type(s)
        if isinstance(f, ClientUpdate):
            assert f.encoded == s.encoded


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
