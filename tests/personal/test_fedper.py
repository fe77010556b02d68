"""FedPer: personal layers start from the client's own values and never leave the client."""

from dataclasses import replace

import numpy as np
import pytest

from fedlake.algorithms import fedavg, personalized
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.runtime import ClientRuntime
from fedlake.client.stores import MemoryStateStore
from fedlake.compression.messages import encode_model
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization, personal_mask
from fedlake.core.plugin import RoundContext
from fedlake.core.rng import client_key, round_rng
from fedlake.core.task import ClientReply, ClientTask, local_steps
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.plugins.personal import fedper, fedper_start
from fedlake.simulation.evaluation import CentralEvaluation

TRAINER = LogRegTrainer(num_features=2, num_classes=2)
P = Personalization("fedper", layers=("weight",))
MASK = personal_mask(TRAINER.spec, P.layers)  # weight (4 values) personal, bias (2) shared
CONFIG = LocalConfig(epochs=2, batch_size=20, lr=0.5)
PLUGIN = fedper(P.layers)


def recipe():
    """FedAvg with CONFIG's local training and P's personal layers."""
    algo = personalized(fedavg(client_lr=0.5, local_epochs=2, batch_size=20), P)
    assert algo.local == CONFIG and algo.personal is not None
    assert algo.personal.name == "fedper"
    np.testing.assert_array_equal(algo.kept_local(TRAINER.spec), MASK)
    return algo


def context(g, ds, rng, **kw) -> RoundContext:
    """One client's round as the runtime builds it for FedPer (its kept positions set)."""
    model = encode_model(g, None, None, np.random.default_rng(0))
    return RoundContext(
        client_id="c",
        task=ClientTask(round=0, attempt=0, seed=0, model=model),
        trainer=TRAINER,
        dataset=ds,
        rng=rng,
        encode_rng=rng,
        config=CONFIG,
        global_params=g,
        total_steps=local_steps(ds.num_train, CONFIG.batch_size, CONFIG.epochs),
        kept_local=MASK,
        sent=~MASK,
        **kw,
    )


ONE = ClientDataset(
    np.zeros((1, 2), np.float32),
    np.zeros(1, np.int64),
    np.zeros((1, 2), np.float32),
    np.zeros(1, np.int64),
)


def test_start_params_replaces_the_personal_positions_by_the_kept_values():
    g = np.arange(6, dtype=np.float32)
    own = np.array([-1, -2, -3, -4], np.float32)
    start = fedper_start(g, own, MASK)
    np.testing.assert_array_equal(start, [-1, -2, -3, -4, 4, 5])
    np.testing.assert_array_equal(g, np.arange(6))  # the global params are not touched
    ctx, kept = PLUGIN.before_fit(context(g, ONE, np.random.default_rng(0)), own)
    np.testing.assert_array_equal(ctx.start_params, [-1, -2, -3, -4, 4, 5])
    assert kept is own  # training has not changed it yet
    np.testing.assert_array_equal(g, np.arange(6))


class StartRecorder(LogRegTrainer):
    """Logistic regression that records where each local training starts."""

    def __init__(self) -> None:
        super().__init__(num_features=2, num_classes=2)
        self.starts: list[np.ndarray] = []

    def fit(self, params, x, y, **kw):
        self.starts.append(np.array(params, copy=True))
        return super().fit(params, x, y, **kw)


@pytest.mark.parametrize(
    "record", [None, {"states": {}}, {"states": {"error_feedback": np.zeros(6, np.float32)}}]
)
def test_start_params_of_a_client_without_personal_values_is_the_global_model(record):
    g = np.arange(6, dtype=np.float32)
    start = fedper_start(g, None, MASK)
    np.testing.assert_array_equal(start, g)
    assert start is not g
    # through the runtime: the client's record has no FedPer state
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = InMemoryClientData({"c": ClientDataset(x, y, x, y)})
    trainer = StartRecorder()
    store = MemoryStateStore({} if record is None else {"c": record})
    runtime = ClientRuntime(data, trainer, recipe(), store)
    task = ClientTask(round=0, attempt=0, seed=0, model=encode_model(g, None, None, rng))
    assert isinstance(runtime.handle(task, "c"), ClientReply)
    assert len(trainer.starts) == 1
    np.testing.assert_array_equal(trainer.starts[0], g)
    assert store.load("c")["states"]["fedper"].shape == (4,)  # kept from now on


def test_start_params_refuses_kept_values_of_another_size_and_a_missing_mask():
    g = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match=r"kept personal state has shape \(2,\), expected \(4,\)"):
        fedper_start(g, np.zeros(2, np.float32), MASK)
    with pytest.raises(ValueError, match=r"kept personal state has shape \(2,\), expected \(4,\)"):
        PLUGIN.before_fit(context(g, ONE, np.random.default_rng(0)), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="fedper needs the personal mask"):
        fedper_start(g, None, None)
    with pytest.raises(ValueError, match=r"the personal mask has shape \(3,\)"):
        fedper_start(g, None, np.ones(3, bool))


def test_finish_uploads_a_zero_personal_delta_and_keeps_the_trained_personal_values():
    g = np.linspace(-1, 1, 6, dtype=np.float32)
    local = np.array([0.3, 0.1, -0.7, 2.5, 0.9, -0.2], np.float32)
    ctx = context(g, ONE, np.random.default_rng(0), upload=local)
    ctx, keep = PLUGIN.after_fit(ctx, None)
    upload = ctx.upload
    delta = upload - g
    assert (delta[MASK] == 0).all()  # exactly: personal values never leave the client
    np.testing.assert_array_equal(delta[~MASK], (local - g)[~MASK])
    np.testing.assert_array_equal(upload[~MASK], local[~MASK])
    assert keep.dtype == np.float32 and keep.shape == (4,)
    np.testing.assert_array_equal(keep, local[:4])
    local[0] = 99.0
    assert keep[0] == np.float32(0.3)  # a copy, not a view of the local params


def opposite_clients(n_train=200, n_test=100, seed=0):
    """Two clients with the same features and opposite label maps (y = x0 > 0 and its flip)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cid, flip in (("a", 0), ("b", 1)):
        x = rng.normal(size=(n_train + n_test, 2)).astype(np.float32)
        y = ((x[:, 0] > 0).astype(np.int64) + flip) % 2
        out[cid] = ClientDataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    return InMemoryClientData(out)


def federate(data, rounds, p):
    """A hand-written federation: every client trains; the server adds the mean delta.

    FedPer's hooks run around local training as the client runtime runs them; each
    client's kept state is returned by client id.
    """
    g = TRAINER.init_params(0)
    states = {}
    for r in range(rounds):
        deltas, locals_ = [], []
        for cid in data.client_ids():
            ds = data.load(cid)
            kept = states.get(cid)
            rng = round_rng(0, r, 3, client_key(cid))
            ctx = context(g, ds, rng)
            start = g
            if p is not None:
                ctx, _ = PLUGIN.before_fit(ctx, kept)
                start = ctx.start_params
                if kept is not None:
                    np.testing.assert_array_equal(start[MASK], kept)
                    np.testing.assert_array_equal(start[~MASK], g[~MASK])
            fit = TRAINER.fit(start, ds.x_train, ds.y_train, config=CONFIG, rng=rng)
            upload = fit.params
            if p is not None:
                ctx, states[cid] = PLUGIN.after_fit(replace(ctx, fit=fit, upload=fit.params), kept)
                upload = ctx.upload
            deltas.append(upload - g)
            locals_.append(fit.params)
        new = g + np.mean(deltas, axis=0, dtype=np.float32)
        if p is not None:
            assert (np.stack(deltas)[:, MASK] == 0).all()
            np.testing.assert_array_equal(new[MASK], g[MASK])  # personal part never moves
            shared_mean = np.mean(np.stack(locals_)[:, ~MASK], axis=0, dtype=np.float32)
            np.testing.assert_allclose(new[~MASK], shared_mean, rtol=0, atol=1e-6)
        g = new
    return g, states


def global_accuracy(data, params):
    accs = [TRAINER.evaluate(params, data.load(c).x_test, data.load(c).y_test) for c in "ab"]
    return float(np.mean([a["accuracy"] for a in accs]))


def test_two_rounds_of_fedper_beat_the_global_model_on_opposite_clients():
    data = opposite_clients()
    g, states = federate(data, rounds=2, p=P)
    assert set(states) == {"a", "b"}
    assert all(s.dtype == np.float32 and s.shape == (4,) for s in states.values())
    store = MemoryStateStore({cid: {"states": {"fedper": s}} for cid, s in states.items()})
    evaluation = CentralEvaluation(
        data, TRAINER, ["a", "b"], algorithm=recipe(), store=store, seed=0
    )
    ev, personal = evaluation.evaluate(g, 2)
    fedavg_global, _ = federate(data, rounds=2, p=None)
    assert personal["personal_clients"] == 2 and personal["personal_seen"] == 2
    assert personal["personal_examples"] == 200
    assert personal["personal_accuracy"] > 0.9
    assert global_accuracy(data, fedavg_global) < 0.7  # one model cannot serve both maps
    assert global_accuracy(data, g) < 0.7
    assert ev["accuracy"] == pytest.approx(global_accuracy(data, g))  # equal test splits
    assert personal["personal_accuracy"] > global_accuracy(data, fedavg_global) + 0.25
