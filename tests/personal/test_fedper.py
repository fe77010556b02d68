"""FedPer: personal layers start from the client's own values and never leave the client."""

import numpy as np
import pytest

from fedlake.client.local import client_key
from fedlake.client.logreg import LogRegTrainer
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization, personal_mask
from fedlake.core.state import round_rng
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.personal.client import PERSONAL, finish, start_params
from fedlake.personal.evaluate import evaluate_personal

TRAINER = LogRegTrainer(num_features=2, num_classes=2)
P = Personalization("fedper", layers=("weight",))
MASK = personal_mask(TRAINER.spec, P.layers)  # weight (4 values) personal, bias (2) shared
CONFIG = LocalConfig(epochs=2, batch_size=20, lr=0.5)


def test_start_params_replaces_the_personal_positions_by_the_kept_values():
    g = np.arange(6, dtype=np.float32)
    kept = {PERSONAL: np.array([-1, -2, -3, -4], np.float32), "residual": None}
    start = start_params(P, g, kept, MASK)
    np.testing.assert_array_equal(start, [-1, -2, -3, -4, 4, 5])
    np.testing.assert_array_equal(g, np.arange(6))  # the global params are not touched


@pytest.mark.parametrize("kept", [None, {}, {"residual": np.zeros(6, np.float32)}])
def test_start_params_of_a_client_without_personal_values_is_the_global_model(kept):
    g = np.arange(6, dtype=np.float32)
    start = start_params(P, g, kept, MASK)
    np.testing.assert_array_equal(start, g)
    assert start is not g


def test_start_params_refuses_kept_values_of_another_size_and_a_missing_mask():
    g = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match=r"kept personal state has shape \(2,\), expected \(4,\)"):
        start_params(P, g, {PERSONAL: np.zeros(2, np.float32)}, MASK)
    with pytest.raises(ValueError, match="fedper needs the personal mask"):
        start_params(P, g, None, None)
    with pytest.raises(ValueError, match=r"the personal mask has shape \(3,\)"):
        start_params(P, g, None, np.ones(3, bool))


def test_finish_uploads_a_zero_personal_delta_and_keeps_the_trained_personal_values():
    g = np.linspace(-1, 1, 6, dtype=np.float32)
    local = np.array([0.3, 0.1, -0.7, 2.5, 0.9, -0.2], np.float32)
    x, y = np.zeros((1, 2), np.float32), np.zeros(1, np.int64)
    upload, keep = finish(
        P,
        trainer=TRAINER,
        global_params=g,
        local_params=local,
        x=x,
        y=y,
        config=CONFIG,
        rng=np.random.default_rng(0),
        kept=None,
        mask=MASK,
    )
    delta = upload - g
    assert (delta[MASK] == 0).all()  # exactly: personal values never leave the client
    np.testing.assert_array_equal(delta[~MASK], (local - g)[~MASK])
    np.testing.assert_array_equal(upload[~MASK], local[~MASK])
    assert list(keep) == [PERSONAL]
    np.testing.assert_array_equal(keep[PERSONAL], local[:4])
    local[0] = 99.0
    assert keep[PERSONAL][0] == np.float32(0.3)  # a copy, not a view of the local params


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
    """A hand-written federation: every client trains; the server adds the mean delta."""
    g = TRAINER.init_params(0)
    states = {}
    for r in range(rounds):
        deltas, locals_ = [], []
        for cid in data.client_ids():
            ds = data.load(cid)
            kept = states.get(cid)
            rng = round_rng(0, r, 3, client_key(cid))
            start = g if p is None else start_params(p, g, kept, MASK)
            if p is not None and kept is not None:
                np.testing.assert_array_equal(start[MASK], kept[PERSONAL])
                np.testing.assert_array_equal(start[~MASK], g[~MASK])
            fit = TRAINER.fit(start, ds.x_train, ds.y_train, config=CONFIG, rng=rng)
            upload = fit.params
            if p is not None:
                upload, states[cid] = finish(
                    p,
                    trainer=TRAINER,
                    global_params=g,
                    local_params=fit.params,
                    x=ds.x_train,
                    y=ds.y_train,
                    config=CONFIG,
                    rng=rng,
                    kept=kept,
                    mask=MASK,
                )
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
    assert set(states) == {"a", "b"} and all(set(s) == {PERSONAL} for s in states.values())
    personal = evaluate_personal(
        P,
        trainer=TRAINER,
        data=data,
        client_ids=["a", "b"],
        global_params=g,
        client_states=states,
        config=CONFIG,
        seed=0,
        round_=2,
        mask=MASK,
    )
    fedavg_global, _ = federate(data, rounds=2, p=None)
    assert personal["personal_clients"] == 2 and personal["personal_seen"] == 2
    assert personal["personal_examples"] == 200
    assert personal["personal_accuracy"] > 0.9
    assert global_accuracy(data, fedavg_global) < 0.7  # one model cannot serve both maps
    assert global_accuracy(data, g) < 0.7
    assert personal["personal_accuracy"] > global_accuracy(data, fedavg_global) + 0.25
