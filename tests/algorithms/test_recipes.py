"""Golden numbers for every recipe on two quadratic toy clients, computed here with numpy.

Client ``a`` minimises ``0.5 (x - c_a)^T A_a (x - c_a)`` with 3 examples, client ``b`` its
own quadratic with 9 (padding rows), so example weights are 1:3. One local epoch is one
exact gradient step (see tests/quadratic.py).
"""

from dataclasses import replace

import numpy as np
import pytest
from quadratic import QuadraticTrainer, quadratic_data

from fedlake.algorithms import (
    ALGORITHMS,
    fedadagrad,
    fedadam,
    fedavg,
    fedavgm,
    fednova,
    fedprox,
    fedyogi,
    personalized,
    scaffold,
)
from fedlake.client.runtime import ClientRuntime
from fedlake.client.stores import MemoryStateStore
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.params import ParamSpec
from fedlake.core.personal import Personalization
from fedlake.core.rng import round_rng
from fedlake.core.state import init_server_state, server_round, task_extras
from fedlake.core.task import ClientFailure, ClientReply, ClientTask, FailureReason, Instructions
from fedlake.core.update import ClientUpdate
from fedlake.orchestration.transport import DOWNLOAD_RNG
from fedlake.plugins import CONTROL

DIM = 2
A = {
    "a": (np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([1.0, -1.0])),
    "b": (np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([-2.0, 3.0])),
}
EXAMPLES = {"a": 3, "b": 9}
P = np.array([3.0, 9.0])  # example weights
START = np.array([0.5, 0.25], np.float32)
DATA = quadratic_data(A, EXAMPLES)
TRAINER = QuadraticTrainer(DIM)


def task_for(algo, state, *, work=None, acks=None):
    """``state``'s round task as the simulator builds it (seed 0, attempt 0)."""
    rng = round_rng(0, state.round, DOWNLOAD_RNG)
    return ClientTask(
        round=state.round,
        attempt=0,
        seed=0,
        model=encode_model(state.params, None, algo.compression.download, rng),
        extras=task_extras(algo, state),
        instructions=work or {},
        acks=acks or {},
    )


def clients(algo, state, *, work=None, store=None, acks=None):
    """Both clients' decoded updates for ``state``'s round (their states kept in ``store``)."""
    task = task_for(algo, state, work=work, acks=acks)
    runtime = ClientRuntime(DATA, TRAINER, algo, store)
    out = [runtime.handle(task, cid) for cid in ("a", "b")]
    assert all(isinstance(u, ClientReply) for u in out), out
    return [decode_reply(u, DIM, None, algo.compression.upload) for u in out]


def pending_control(store, cid, tag):
    """The c_i client ``cid`` computed in round-attempt ``tag``, kept until acknowledged."""
    pending = store.load(cid)["pending"]
    assert pending["tag"] == tag
    return pending["states"]["scaffold"]


def gd(x, cid, *, lr, steps, mu=0.0, correction=0.0):
    """``steps`` exact gradient steps of client ``cid`` from ``x`` (proximal, corrected)."""
    a, c = A[cid]
    x0 = y = np.asarray(x, np.float64)
    for _ in range(steps):
        y = y - lr * (a @ (y - c) + mu * (y - x0) + correction)
    return y


def weighted(rows, p=P):
    return np.average(np.asarray(rows), axis=0, weights=p)


# -- FedProx ---------------------------------------------------------------------------------


def test_fedprox_two_local_steps_golden():
    mu, lr = 0.5, 0.1
    algo = fedprox(mu=mu, client_lr=lr, local_epochs=2)
    state = init_server_state(algo, START, seed=0)
    ups = clients(algo, state)
    x = START.astype(np.float64)
    local = {cid: gd(x, cid, lr=lr, steps=2, mu=mu) for cid in ("a", "b")}
    # by hand for a: step 1 has no proximal pull (w = w0), step 2 pulls back by mu*(w1 - w0)
    a, c = A["a"]
    w1 = x - lr * a @ (x - c)
    w2 = w1 - lr * (a @ (w1 - c) + mu * (w1 - x))
    np.testing.assert_allclose(local["a"], w2)
    for u, cid in zip(ups, ("a", "b"), strict=True):
        np.testing.assert_allclose(u.delta, local[cid] - x, rtol=1e-6, atol=1e-7)
        assert u.weight == EXAMPLES[cid] and u.metrics["steps"] == 2
    new, _ = server_round(algo, state, ups)
    np.testing.assert_allclose(new.params, weighted([local["a"], local["b"]]), rtol=1e-6)
    # the proximal term made a difference: plain FedAvg lands elsewhere
    plain = weighted([gd(x, cid, lr=lr, steps=2) for cid in ("a", "b")])
    assert np.abs(plain - new.params).max() > 1e-3


def test_fedprox_unweighted_and_server_lr():
    algo = fedprox(mu=1.0, client_lr=0.2, local_epochs=2, weighted=False, server_lr=0.5)
    state = init_server_state(algo, START, seed=0)
    new, _ = server_round(algo, state, clients(algo, state))
    x = START.astype(np.float64)
    mean = np.mean([gd(x, cid, lr=0.2, steps=2, mu=1.0) - x for cid in ("a", "b")], axis=0)
    np.testing.assert_allclose(new.params, x + 0.5 * mean, rtol=1e-6)


def test_fedprox_keeps_a_stragglers_partial_work():
    mu, lr = 0.5, 0.1
    algo = fedprox(mu=mu, client_lr=lr, local_epochs=3)
    state = init_server_state(algo, START, seed=0)
    ups = clients(algo, state, work={"a": Instructions(fraction=1 / 3)})
    assert ups[0].metrics["steps"] == 1 and ups[0].metrics["work_fraction"] == pytest.approx(1 / 3)
    assert ups[1].metrics["steps"] == 3 and "work_fraction" not in ups[1].metrics
    new, _ = server_round(algo, state, ups)
    x = START.astype(np.float64)
    local = [gd(x, "a", lr=lr, steps=1, mu=mu), gd(x, "b", lr=lr, steps=3, mu=mu)]
    np.testing.assert_allclose(new.params, weighted(local), rtol=1e-6)


# -- SCAFFOLD --------------------------------------------------------------------------------


def scaffold_round(x, c, ci, *, lr, steps, population):
    """One SCAFFOLD round in numpy (option II): new x, new c, new c_i's, uploaded deltas."""
    ys, new_ci, dci = {}, {}, {}
    for cid in ("a", "b"):
        k = steps[cid]
        ys[cid] = gd(x, cid, lr=lr, steps=k, correction=c - ci[cid])
        new_ci[cid] = ci[cid] - c + (x - ys[cid]) / (k * lr)
        dci[cid] = new_ci[cid] - ci[cid]
    x_new = x + weighted([ys["a"] - x, ys["b"] - x])
    # |S|/N times the mean control delta, weighted like the deltas (by examples)
    c_new = c + 2 / population * weighted([dci["a"], dci["b"]])
    return x_new, c_new, new_ci, dci


def test_scaffold_first_two_rounds_golden():
    lr, k = 0.1, 3
    algo = scaffold(client_lr=lr, local_epochs=k)
    state = init_server_state(algo, START, seed=0)
    np.testing.assert_array_equal(state.plugins["scaffold"], [0.0, 0.0])
    x, c = START.astype(np.float64), np.zeros(DIM)
    ci = {"a": np.zeros(DIM), "b": np.zeros(DIM)}
    store, acks = MemoryStateStore(), {}
    for r in range(2):
        ups = clients(algo, state, store=store, acks=acks)
        before = ci
        x, c, ci, dci = scaffold_round(x, c, ci, lr=lr, steps={"a": k, "b": k}, population=2)
        for u in ups:
            cid = u.client_id
            np.testing.assert_allclose(pending_control(store, cid, (r, 0)), ci[cid], atol=1e-5)
            np.testing.assert_allclose(u.vectors[CONTROL], dci[cid], atol=1e-5)
            if r > 0:  # last round's c_i, acknowledged, is the one it started from
                committed = store.load(cid)["states"]["scaffold"]
                np.testing.assert_allclose(committed, before[cid], atol=1e-5)
            acks[cid] = (r, 0)  # the server aggregates both updates
        state, metrics = server_round(algo, state, ups)
        np.testing.assert_allclose(state.params, x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(state.plugins["scaffold"], c, atol=1e-5)
        assert metrics["control_norm"] == pytest.approx(np.linalg.norm(c), rel=1e-5)
        if r == 0:  # round 1 is plain FedAvg, and c_i is the mean of the local gradients
            np.testing.assert_allclose(x, weighted([gd(START, cid, lr=lr, steps=k) for cid in A]))
            np.testing.assert_allclose(ci["a"], (START - gd(START, "a", lr=lr, steps=k)) / (k * lr))
    # round 2 differs from FedAvg's second round: the corrections acted
    two_fedavg = START.astype(np.float64)
    for _ in range(2):
        two_fedavg = weighted([gd(two_fedavg, cid, lr=lr, steps=k) for cid in A])
    assert np.abs(two_fedavg - state.params).max() > 1e-3


def test_scaffold_control_moves_by_participation_times_weighted_mean_and_actual_steps():
    lr, k = 0.1, 3
    algo = scaffold(client_lr=lr, local_epochs=k)
    state = init_server_state(algo, START, seed=0)
    store = MemoryStateStore()
    ups = clients(algo, state, work={"a": Instructions(max_steps=2)}, store=store)  # K_a = 2
    assert [u.metrics["steps"] for u in ups] == [2, 3]
    x, c, ci, _ = scaffold_round(
        START.astype(np.float64),
        np.zeros(DIM),
        {"a": np.zeros(DIM), "b": np.zeros(DIM)},
        lr=lr,
        steps={"a": 2, "b": 3},
        population=4,  # two more clients exist, not sampled this round
    )
    np.testing.assert_allclose(pending_control(store, "a", (0, 0)), ci["a"], atol=1e-5)
    new, _ = server_round(algo, state, ups, population=4)
    new_control = new.plugins["scaffold"]
    np.testing.assert_allclose(new_control, c, atol=1e-5)
    np.testing.assert_allclose(new_control, 2 / 4 * weighted([ci["a"], ci["b"]]), atol=1e-5)
    np.testing.assert_allclose(new.params, x, rtol=1e-6)


def test_scaffold_refuses_a_task_without_control_and_updates_without_it():
    algo = scaffold()
    state = init_server_state(algo, START, seed=0)
    task = replace(task_for(algo, state), extras={})  # the model without c
    store = MemoryStateStore()
    failure = ClientRuntime(DATA, TRAINER, algo, store).handle(task, "a")
    assert isinstance(failure, ClientFailure) and failure.reason is FailureReason.ERROR
    assert failure.message.startswith("ValueError: SCAFFOLD needs the server's control variate")
    assert store.load("a") is None  # nothing kept from a round it could not run
    bare = ClientUpdate("a", {"delta": np.zeros(DIM, np.float32)}, 1.0)
    with pytest.raises(ValueError, match="missing 'control' vector"):
        server_round(algo, state, [bare])


# -- FedNova ---------------------------------------------------------------------------------


def test_fednova_normalises_clients_with_different_steps():
    lr, k = 0.1, 3
    algo = fednova(client_lr=lr, local_epochs=k)
    state = init_server_state(algo, START, seed=0)
    ups = clients(algo, state, work={"a": Instructions(max_steps=1)})
    assert [u.metrics["steps"] for u in ups] == [1, 3]
    x = START.astype(np.float64)
    da, db = gd(x, "a", lr=lr, steps=1) - x, gd(x, "b", lr=lr, steps=3) - x
    tau_eff = (3 * 1 + 9 * 3) / 12  # 2.5
    expected = x + tau_eff * (3 * da / 1 + 9 * db / 3) / 12
    new, _ = server_round(algo, state, ups)
    np.testing.assert_allclose(new.params, expected, rtol=1e-6)
    # FedAvg would have averaged the raw deltas
    np.testing.assert_allclose(
        server_round(fedavg(client_lr=lr, local_epochs=k), state, ups)[0].params,
        x + weighted([da, db]),
        rtol=1e-6,
    )
    assert np.abs(expected - (x + weighted([da, db]))).max() > 1e-3


def test_fednova_with_a_proximal_term_uses_its_a_i():
    lr, k, mu = 0.1, 4, 0.5
    algo = fednova(mu=mu, client_lr=lr, local_epochs=k)
    state = init_server_state(algo, START, seed=0)
    ups = clients(algo, state, work={"b": Instructions(fraction=0.5)})  # b: 2 of its 4 steps
    assert [u.metrics["steps"] for u in ups] == [4, 2]
    x = START.astype(np.float64)
    da = gd(x, "a", lr=lr, steps=4, mu=mu) - x
    db = gd(x, "b", lr=lr, steps=2, mu=mu) - x

    def a_of(tau):
        return (1 - (1 - lr * mu) ** tau) / (lr * mu)

    tau_eff = (3 * a_of(4) + 9 * a_of(2)) / 12
    expected = x + tau_eff * (3 * da / a_of(4) + 9 * db / a_of(2)) / 12
    np.testing.assert_allclose(server_round(algo, state, ups)[0].params, expected, rtol=1e-6)


def test_fednova_equals_fedavg_when_steps_are_equal():
    algo = fednova(client_lr=0.1, local_epochs=3)
    state = init_server_state(algo, START, seed=0)
    ups = clients(algo, state)
    nova = server_round(algo, state, ups)[0].params
    avg = server_round(fedavg(client_lr=0.1, local_epochs=3), state, ups)[0].params
    np.testing.assert_array_equal(nova, avg)


# -- server optimisers from known deltas -----------------------------------------------------

ROUNDS = [  # per round: (delta of a, weight 1), (delta of b, weight 3)
    (np.array([1.0, -2.0]), np.array([3.0, 0.0])),
    (np.array([0.0, 1.0]), np.array([-1.0, 2.0])),
]
MEANS = [(da + 3 * db) / 4 for da, db in ROUNDS]  # (2.5, -0.5), (-0.75, 1.75)


def server_two_rounds(algo):
    state = init_server_state(algo, START, seed=0)
    for da, db in ROUNDS:
        ups = [
            ClientUpdate("a", {"delta": da.astype(np.float32)}, 1.0),
            ClientUpdate("b", {"delta": db.astype(np.float32)}, 3.0),
        ]
        state, _ = server_round(algo, state, ups)
    return state


def test_known_deltas_average_as_stated():
    np.testing.assert_allclose(MEANS, [[2.5, -0.5], [-0.75, 1.75]])


def test_fedavgm_two_rounds():
    state = server_two_rounds(fedavgm(server_lr=0.5, momentum=0.9))
    v1 = MEANS[0]
    v2 = 0.9 * v1 + MEANS[1]
    np.testing.assert_allclose(state.params, START + 0.5 * v1 + 0.5 * v2, rtol=1e-6)
    np.testing.assert_allclose(state.server_state.velocity, v2, rtol=1e-6)


def adaptive_two_rounds(second_moment, *, lr, beta1, tau):
    x, m, v = START.astype(np.float64), np.zeros(DIM), np.full(DIM, tau * tau)
    for delta in MEANS:
        m = beta1 * m + (1 - beta1) * delta
        v = second_moment(v, delta * delta)
        x = x + lr * m / (np.sqrt(v) + tau)
    return x, m, v


@pytest.mark.parametrize(
    ("recipe", "second_moment"),
    [
        (fedadagrad, lambda v, sq: v + sq),
        (fedadam, lambda v, sq: 0.99 * v + 0.01 * sq),
        (fedyogi, lambda v, sq: v - 0.01 * sq * np.sign(v - sq)),
    ],
    ids=["fedadagrad", "fedadam", "fedyogi"],
)
def test_adaptive_server_steps_two_rounds(recipe, second_moment):
    beta1 = 0.0 if recipe is fedadagrad else 0.9
    kw = {} if recipe is fedadagrad else {"beta2": 0.99}
    state = server_two_rounds(recipe(server_lr=0.1, beta1=beta1, tau=1e-3, **kw))
    x, m, v = adaptive_two_rounds(second_moment, lr=0.1, beta1=beta1, tau=1e-3)
    np.testing.assert_allclose(state.params, x, rtol=1e-6)
    np.testing.assert_allclose(state.server_state.m, m, rtol=1e-12)
    np.testing.assert_allclose(state.server_state.v, v, rtol=1e-12)


def test_adaptive_first_step_by_hand():
    # FedAdagrad, beta1 0: step = lr * delta / (sqrt(tau^2 + delta^2) + tau)
    state = init_server_state(fedadagrad(server_lr=0.1, tau=1e-3), START, seed=0)
    delta = np.array([2.5, -0.5], np.float32)
    new, _ = server_round(
        fedadagrad(server_lr=0.1, tau=1e-3), state, [ClientUpdate("a", {"delta": delta}, 1.0)]
    )
    step = 0.1 * delta / (np.sqrt(1e-6 + delta.astype(np.float64) ** 2) + 1e-3)
    np.testing.assert_allclose(new.params - START, step, rtol=1e-5)
    # nearly sign(delta) * lr: the step is off by at most lr * tau / |delta|
    off = np.abs(new.params - START - 0.1 * np.sign(delta))
    assert (off <= 0.1 * 1e-3 / np.abs(delta) * 1.001).all()


# -- personalisation refusals ----------------------------------------------------------------


def test_ditto_refuses_an_unstable_step():
    with pytest.raises(ValueError, match=r"lam=5\.0 \* lr=0\.5 = 2\.5"):
        personalized(fedavg(client_lr=0.5), Personalization("ditto", lam=5.0))
    with pytest.raises(ValueError, match=r"lam=3\.0 \* lr=1\.0 = 3"):  # its own lr counts
        personalized(fedavg(client_lr=0.01), Personalization("ditto", lam=3.0, lr=1.0))
    ok = personalized(fedavg(client_lr=0.5), Personalization("ditto", lam=4.0))  # exactly 2
    assert ok.personal.name == "ditto" and ok.name == "fedavg"
    # the plugin pulls with lam = 4.0: round 2's personal step from v1 towards the new global
    store = MemoryStateStore()
    state = init_server_state(ok, START, seed=0)
    state, _ = server_round(ok, state, clients(ok, state, store=store))
    clients(ok, state, store=store)
    a, c = A["a"]
    v1 = gd(START, "a", lr=0.5, steps=1)  # round 1: v starts at the global model, no pull
    x1 = state.params.astype(np.float64)
    v2 = v1 - 0.5 * (a @ (v1 - c) + 4.0 * (v1 - x1))
    np.testing.assert_allclose(store.load("a")["states"]["ditto"], v2, rtol=1e-5, atol=1e-6)


def test_fedper_refuses_scaffold():
    fedper = Personalization("fedper", layers=("bias",))
    with pytest.raises(ValueError, match="FedPer personal layers cannot be combined with SCAFFOLD"):
        personalized(scaffold(), fedper)
    kept = personalized(fedprox(), fedper)
    assert kept.personal.name == "fedper"
    spec = ParamSpec.from_arrays({"w": np.zeros(3, np.float32), "bias": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(kept.kept_local(spec), [False, False, False, True, True])
    ditto = personalized(scaffold(), Personalization("ditto"))  # Ditto is fine
    assert ditto.has("scaffold") and ditto.personal.name == "ditto"


# -- bad hyperparameters fail at construction, naming the value ------------------------------


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_every_recipe_refuses_a_bad_server_lr(name, bad):
    with pytest.raises(ValueError, match=rf"server lr must be a finite number > 0, got {bad!r}"):
        ALGORITHMS[name](server_lr=bad)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_recipe_refuses_bad_local_settings(name):
    recipe = ALGORITHMS[name]
    with pytest.raises(ValueError, match=r"client lr must be > 0, got -0\.1"):
        recipe(client_lr=-0.1)
    with pytest.raises(ValueError, match="local epochs must be >= 1, got 0"):
        recipe(local_epochs=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        recipe(batch_size=0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: fedprox(mu=-1), r"mu must be a finite number in \[0, inf\), got -1"),
        (lambda: fedprox(mu=float("nan")), r"mu must be a finite number in \[0, inf\), got nan"),
        (lambda: fednova(mu=-1), "mu must be a finite number >= 0, got -1"),
        (lambda: fednova(mu=20, client_lr=0.1), r"client_lr \* mu must be < 1.*got 0\.1 \* 20"),
        (lambda: fedavgm(momentum=1.0), r"momentum must be a number in \[0, 1\), got 1\.0"),
        (lambda: fedavgm(momentum=-0.5), r"momentum must be a number in \[0, 1\), got -0\.5"),
        (lambda: fedadam(beta1=1.0), r"beta1 must be a number in \[0, 1\), got 1\.0"),
        (lambda: fedadam(beta2=1.5), r"beta2 must be a number in \[0, 1\), got 1\.5"),
        (lambda: fedyogi(beta2=-0.1), r"beta2 must be a number in \[0, 1\), got -0\.1"),
        (lambda: fedyogi(tau=0), "tau must be a finite number > 0, got 0"),
        (lambda: fedadagrad(tau=-1e-3), "tau must be a finite number > 0, got -0.001"),
        (lambda: fedadagrad(beta1=2), r"beta1 must be a number in \[0, 1\), got 2"),
    ],
)
def test_bad_hyperparameters_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()
