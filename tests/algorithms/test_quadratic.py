"""Quadratic clients with different curvatures: FedAvg's biased fixed point, SCAFFOLD's cure.

Client ``i`` minimises ``f_i(x) = 0.5 (x - c_i)^T A_i (x - c_i)``. With K exact local
gradient steps of size eta, a FedAvg client returns ``c_i + M_i (x - c_i)`` with
``M_i = (I - eta A_i)^K``, so FedAvg (uniform weights, server lr 1) iterates
``x <- mean(M_i) x + mean((I - M_i) c_i)`` and converges to
``(I - mean M_i)^{-1} mean((I - M_i) c_i)``, not to the optimum
``(sum A_i)^{-1} sum A_i c_i`` (Karimireddy et al., ICML 2020, Section 3; Charles and
Konecny, 2021). SCAFFOLD's control variates remove that client drift.
"""

import functools

import numpy as np
from quadratic import QuadraticTrainer, quadratic_data, random_problems

from fedlake.algorithms import fedavg, scaffold
from fedlake.client.runtime import ClientRuntime
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.rng import round_rng
from fedlake.core.state import init_server_state, server_round, task_extras
from fedlake.core.task import ClientReply, ClientTask
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.transport import DOWNLOAD_RNG
from fedlake.simulation import simulate

DIM, CLIENTS, SEED = 4, 3, 2024
ETA, K = 0.1, 5

PROBLEMS = random_problems(CLIENTS, DIM, seed=SEED)
IDS = list(PROBLEMS)


def optimum(problems):
    a_sum = sum(a for a, _ in problems.values())
    return np.linalg.solve(a_sum, sum(a @ c for a, c in problems.values()))


def fedavg_fixed_point(problems, eta, k):
    eye = np.eye(DIM)
    ms = [np.linalg.matrix_power(eye - eta * a, k) for a, _ in problems.values()]
    rhs = np.mean([(eye - m) @ c for m, (_, c) in zip(ms, problems.values(), strict=True)], axis=0)
    return np.linalg.solve(eye - np.mean(ms, axis=0), rhs)


def task_for(algo, state, acks):
    """The round's task as the simulator builds it: encoded model, extras, the clients' acks."""
    rng = round_rng(state.seed, state.round, DOWNLOAD_RNG)
    return ClientTask(
        round=state.round,
        attempt=0,
        seed=state.seed,
        model=encode_model(state.params, None, algo.compression.download, rng),
        extras=task_extras(algo, state),
        acks=dict(acks),
    )


def one_round(algo, state, runtime, acks, population):
    """A pure round: every client through its runtime, the server through server_round.

    Every client's update is aggregated, so each one's contribution is acknowledged in
    the next round's task (SCAFFOLD's c_i then counts on the client).
    """
    task = task_for(algo, state, acks)
    replies = [runtime.handle(task, cid) for cid in IDS]
    assert all(isinstance(r, ClientReply) for r in replies), replies
    updates = [decode_reply(r, DIM, None, algo.compression.upload) for r in replies]
    new = server_round(algo, state, updates, population=population)[0]
    if algo.needs_acks:
        acks.update({cid: task.tag for cid in IDS})
    return new


def run_pure(algo, rounds):
    """``rounds`` pure rounds; the server state, the clients' store and the acks."""
    data, trainer = quadratic_data(PROBLEMS), QuadraticTrainer(DIM)
    state = init_server_state(algo, trainer.init_params(0), seed=SEED)
    runtime = ClientRuntime(data, trainer, algo)
    acks = {}
    for _ in range(rounds):
        state = one_round(algo, state, runtime, acks, population=CLIENTS)
    return state, runtime.store, acks


def client_control(store, cid, acks):
    """Client ``cid``'s c_i: its pending one once the server acknowledged it, else committed."""
    record = store.load(cid)
    pending = record.get("pending")
    if pending and tuple(pending["tag"]) == tuple(acks.get(cid, ())):
        return pending["states"]["scaffold"]
    return record["states"]["scaffold"]


def test_the_problem_is_heterogeneous_enough():
    # the closed forms differ by far more than the 1e-5 the runs are held to
    gap = np.linalg.norm(fedavg_fixed_point(PROBLEMS, ETA, K) - optimum(PROBLEMS))
    assert gap > 0.2
    # one local step is plain gradient descent on the sum: no drift
    np.testing.assert_allclose(fedavg_fixed_point(PROBLEMS, ETA, 1), optimum(PROBLEMS), atol=1e-10)


def test_fedavg_converges_to_its_biased_fixed_point_not_the_optimum():
    algo = fedavg(client_lr=ETA, local_epochs=K, weighted=False)
    state, _, _ = run_pure(algo, rounds=60)
    fixed = fedavg_fixed_point(PROBLEMS, ETA, K)
    np.testing.assert_allclose(state.params, fixed, atol=1e-5)
    assert np.linalg.norm(state.params - optimum(PROBLEMS)) > 0.2
    # a fixed point: one more round barely moves it
    again, _, _ = run_pure(algo, rounds=61)
    assert np.abs(again.params - state.params).max() < 1e-5


def test_scaffold_converges_to_the_true_optimum():
    algo = scaffold(client_lr=ETA, local_epochs=K)
    state, store, acks = run_pure(algo, rounds=60)
    best = optimum(PROBLEMS)
    np.testing.assert_allclose(state.params, best, atol=1e-5)
    # every client's last c_i waits in its store for the (given) acknowledgement
    assert all(store.load(cid)["pending"]["tag"] == (59, 0) == acks[cid] for cid in IDS)
    controls = {cid: client_control(store, cid, acks) for cid in IDS}
    # at the optimum each c_i is the client's gradient there and c their mean (zero)
    for cid, (a, c) in PROBLEMS.items():
        np.testing.assert_allclose(controls[cid], a @ (best - c), atol=1e-4)
    server_control = state.plugins["scaffold"]
    np.testing.assert_allclose(server_control, 0.0, atol=1e-4)
    np.testing.assert_allclose(
        server_control, np.mean([controls[cid] for cid in IDS], axis=0), atol=1e-6
    )


def test_scaffold_through_the_round_loop_carries_control_variates(tmp_path):
    rounds = 40
    fed = simulate(
        recipe=functools.partial(scaffold, client_lr=ETA, local_epochs=K),
        trainer=QuadraticTrainer(DIM),
        data=quadratic_data(PROBLEMS),
        run_dir=tmp_path / "run",
        rounds=rounds,
        cohort=CohortSpec(count=CLIENTS),
        seed=SEED,
        executor="inline",
        observer=NullObserver(),
    )
    res = fed.run()
    pure, store, acks = run_pure(scaffold(client_lr=ETA, local_epochs=K), rounds)
    # the loop (download codec, client states kept between rounds, population = every
    # client) computes exactly what the pure path computes
    np.testing.assert_array_equal(res.state.params, pure.params)
    np.testing.assert_array_equal(res.state.plugins["scaffold"], pure.plugins["scaffold"])
    clients = fed.snapshots[0]
    for cid in IDS:
        np.testing.assert_array_equal(
            client_control(clients, cid, acks), client_control(store, cid, acks)
        )
    assert res.state.round == rounds
    assert [h["num_completed"] for h in res.history] == [CLIENTS] * rounds
    np.testing.assert_allclose(res.state.params, optimum(PROBLEMS), atol=1e-5)


# -- example weights ---------------------------------------------------------------------------

EXAMPLES = {"q0": 5, "q1": 20, "q2": 80}  # padding rows: example weights 1 : 4 : 16


def weighted_optimum(problems, examples):
    w = {cid: float(examples[cid]) for cid in problems}
    a_sum = sum(w[cid] * a for cid, (a, _) in problems.items())
    return np.linalg.solve(a_sum, sum(w[cid] * a @ c for cid, (a, c) in problems.items()))


def run_weighted(algo, rounds):
    data, trainer = quadratic_data(PROBLEMS, EXAMPLES), QuadraticTrainer(DIM)
    state = init_server_state(algo, trainer.init_params(0), seed=SEED)
    runtime = ClientRuntime(data, trainer, algo)
    acks = {}
    for _ in range(rounds):
        state = one_round(algo, state, runtime, acks, population=CLIENTS)
    return state


def test_weighted_fedavg_with_one_local_step_minimises_the_example_weighted_objective():
    # what weighted=True means: the objective sum_i n_i f_i (K = 1: no client drift)
    state = run_weighted(fedavg(client_lr=ETA, local_epochs=1), rounds=400)
    target = weighted_optimum(PROBLEMS, EXAMPLES)
    assert np.linalg.norm(target - optimum(PROBLEMS)) > 0.3  # the weights matter here
    np.testing.assert_allclose(state.params, target, atol=1e-5)


def test_unweighted_scaffold_minimises_the_plain_sum():
    state = run_weighted(scaffold(client_lr=ETA, local_epochs=K, weighted=False), rounds=60)
    np.testing.assert_allclose(state.params, optimum(PROBLEMS), atol=1e-5)


def test_weighted_scaffold_minimises_the_example_weighted_objective():
    # scaffold(weighted=True) (the default) averages the model deltas and the control
    # deltas Delta c_i with the same example weights, so c tracks the weighted mean of the
    # clients' c_i and the fixed point is the *example-weighted* optimum, as for FedAvg's
    # weighted=True above. (Moving c by the unweighted sum(Delta c_i) / N instead, as an
    # earlier version did, misses the weighted optimum: this test caught it.)
    state = run_weighted(scaffold(client_lr=ETA, local_epochs=K), rounds=60)
    np.testing.assert_allclose(state.params, weighted_optimum(PROBLEMS, EXAMPLES), atol=1e-5)
