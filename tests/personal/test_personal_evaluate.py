"""The personal hook and CentralEvaluation.personal: the model each client uses, on its own
test split."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from toy import ToyTrainer

from fedlake.algorithms import fedavg, personalized
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.stores import MemoryStateStore
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization
from fedlake.core.plugin import PersonalContext
from fedlake.core.rng import client_key, round_rng
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.plugins.personal import personalization
from fedlake.simulation.evaluation import PERSONAL_RNG, CentralEvaluation, EvalSet

LOGREG = LogRegTrainer(num_features=2, num_classes=2)
CONFIG = LocalConfig(epochs=4, batch_size=8, lr=0.3, max_steps=1)


def dataset(x, y, n_train):
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    return ClientDataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def logreg_data(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for cid, n in (("a", 30), ("b", 50)):
        x = rng.normal(size=(n, 2))
        out[cid] = dataset(x, x[:, 1] > 0, n_train=n - 10)
    return InMemoryClientData(out)


def personal_params(p, *, trainer, global_params, state, x_train, y_train, config, rng):
    """The params a client of ``p`` would use, from its plugin's ``personal`` hook."""
    plugin = personalization(p)
    assert plugin.personal is not None
    ctx = PersonalContext(
        trainer=trainer,
        global_params=global_params,
        x_train=x_train,
        y_train=y_train,
        config=config,
        rng=rng,
    )
    return plugin.personal(ctx, state)


def central(p, *, trainer, data, client_ids, records, seed):
    """Central evaluation of a FedAvg recipe (local training CONFIG) personalised by ``p``."""
    algorithm = personalized(replace(fedavg(), local=CONFIG), p)
    assert algorithm.personal is not None and algorithm.personal.name == p.kind
    store = MemoryStateStore(records)
    return CentralEvaluation(data, trainer, client_ids, algorithm=algorithm, store=store, seed=seed)


def evaluate_personal(p, *, trainer, data, client_ids, global_params, records, seed, round_):
    """Every evaluation client's personal model on its test split (and the global model's
    metrics on the same splits are the first result of ``evaluate``)."""
    evaluation = central(
        p, trainer=trainer, data=data, client_ids=client_ids, records=records, seed=seed
    )
    ev, personal = evaluation.evaluate(global_params, round_)
    assert set(ev) >= {"loss", "accuracy"}
    return personal


def test_finetune_is_a_direct_fit_on_the_train_split_with_the_same_rng():
    ds = logreg_data().load("a")
    p = Personalization("finetune", epochs=2, lr=0.05)
    g = np.array([0.1, -0.2, 0.3, 0.0, 0.1, -0.1], np.float32)
    got = personal_params(
        p,
        trainer=LOGREG,
        global_params=g,
        state=None,
        x_train=ds.x_train,
        y_train=ds.y_train,
        config=CONFIG,
        rng=np.random.default_rng(3),
    )
    cfg = replace(CONFIG, epochs=2, lr=0.05, max_steps=None)
    direct = LOGREG.fit(g, ds.x_train, ds.y_train, config=cfg, rng=np.random.default_rng(3)).params
    np.testing.assert_array_equal(got, direct)
    assert not np.array_equal(direct, g)


def test_finetune_of_a_client_without_train_examples_is_the_global_model():
    g = np.ones(6, np.float32)
    empty = np.zeros((0, 2), np.float32)
    got = personal_params(
        Personalization("finetune"),
        trainer=LOGREG,
        global_params=g,
        state=None,
        x_train=empty,
        y_train=np.zeros(0, np.int64),
        config=CONFIG,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_array_equal(got, g)


def test_evaluate_personal_weights_clients_by_test_examples_exactly():
    # Toy loss 0.5 * ||x - p||^2, accuracy 1 / (1 + loss); train rows unused by ditto.
    data = InMemoryClientData(
        {
            "a": dataset([[9, 9], [1, 0]], [0, 0], n_train=1),  # 1 test row, loss 0.5
            "b": dataset([[9, 9]] + [[0, 2]] * 3, [0] * 4, n_train=1),  # 3 test rows, loss 2
            "c": dataset([[5, 5]], [0], n_train=1),  # no test split: skipped
        }
    )
    v = np.zeros(2, np.float32)
    out = evaluate_personal(
        Personalization("ditto"),
        trainer=ToyTrainer(),
        data=data,
        client_ids=["a", "b", "c"],
        global_params=np.full(2, 100.0, np.float32),  # far away: only kept models are used
        records={c: {"states": {"ditto": v}} for c in "abc"},
        seed=0,
        round_=1,
    )
    assert out == {
        "personal_loss": (0.5 * 1 + 2.0 * 3) / 4,
        "personal_accuracy": ((1 / 1.5) * 1 + (1 / 3) * 3) / 4,
        "personal_examples": 4.0,
        "personal_clients": 2.0,
        "personal_seen": 2.0,
    }


def global_metrics(data, g):
    res = [LOGREG.evaluate(g, data.load(c).x_test, data.load(c).y_test) for c in ("a", "b")]
    n = sum(r["examples"] for r in res)
    return (
        sum(r["loss"] * r["examples"] for r in res) / n,
        sum(r["accuracy"] * r["examples"] for r in res) / n,
    )


@pytest.mark.parametrize(
    ("p", "records"),
    [
        (Personalization("ditto"), {}),
        (
            Personalization("ditto"),
            {"b": {"states": {"error_feedback": np.zeros(6, np.float32)}}},
        ),
        (Personalization("fedper", layers=("bias",)), {}),
        (Personalization("fedper", layers=("bias",)), {"a": {"states": {}}, "b": {}}),
    ],
)
def test_clients_never_seen_use_the_global_model(p, records):
    data = logreg_data()
    g = np.array([0.5, -0.5, -0.5, 0.5, 0.1, 0.0], np.float32)
    out = evaluate_personal(
        p,
        trainer=LOGREG,
        data=data,
        client_ids=["a", "b"],
        global_params=g,
        records=records,
        seed=0,
        round_=0,
    )
    loss, acc = global_metrics(data, g)
    assert out["personal_loss"] == pytest.approx(loss, rel=1e-12)
    assert out["personal_accuracy"] == pytest.approx(acc, rel=1e-12)
    assert (out["personal_clients"], out["personal_seen"], out["personal_examples"]) == (2, 0, 20)


def test_fedper_evaluates_global_shared_with_kept_personal_values():
    data = logreg_data()
    g = np.array([0.5, -0.5, -0.5, 0.5, 0.1, 0.0], np.float32)
    p = Personalization("fedper", layers=("bias",))
    own = np.array([3.0, -3.0], np.float32)
    out = evaluate_personal(
        p,
        trainer=LOGREG,
        data=data,
        client_ids=["a"],
        global_params=g,
        records={"a": {"states": {"fedper": own}}},
        seed=0,
        round_=0,
    )
    ds = data.load("a")
    expected = LOGREG.evaluate(np.concatenate([g[:4], own]), ds.x_test, ds.y_test)
    assert out["personal_loss"] == expected["loss"]
    assert out["personal_accuracy"] == expected["accuracy"]
    assert out["personal_seen"] == 1


def test_finetune_evaluation_draws_from_the_personal_rng_of_each_client():
    data = logreg_data()
    g = np.zeros(6, np.float32)
    p = Personalization("finetune", epochs=3)
    out = evaluate_personal(
        p,
        trainer=LOGREG,
        data=data,
        client_ids=["b"],
        global_params=g,
        records={},
        seed=5,
        round_=4,
    )
    ds = data.load("b")
    rng = round_rng(5, 4, PERSONAL_RNG, client_key("b"))
    tuned = LOGREG.fit(
        g, ds.x_train, ds.y_train, config=replace(CONFIG, epochs=3, max_steps=None), rng=rng
    ).params
    expected = LOGREG.evaluate(tuned, ds.x_test, ds.y_test)
    assert out["personal_loss"] == expected["loss"]
    assert out["personal_accuracy"] == expected["accuracy"]
    assert out["personal_seen"] == 0


def test_no_client_with_a_test_split_is_a_clear_error():
    data = InMemoryClientData({"a": dataset([[1.0, 0.0]], [0], n_train=1)})
    evaluation = central(
        Personalization("ditto"), trainer=LOGREG, data=data, client_ids=["a"], records={}, seed=0
    )
    # the evaluation set is built from the clients with a test split: there is none
    with pytest.raises(ValueError, match="no evaluation client has a test split"):
        evaluation.evaluate(np.zeros(6, np.float32), 0)
    # personal evaluation over clients without a test split says how many it was given
    evaluation.eval_set = EvalSet(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), ("a",))
    plugin = evaluation.algorithm.personal
    assert plugin is not None
    with pytest.raises(ValueError, match=r"no client has a test split .*\(1 clients given\)"):
        evaluation.personal(plugin, np.zeros(6, np.float32), 0)


def test_the_plugins_do_not_import_the_client_runtime():
    # fedlake.client.runtime imports fedlake.plugins; the reverse import must not happen,
    # and the client side never imports the simulation wing (central evaluation).
    code = (
        "import sys, fedlake.plugins.personal\n"
        "assert 'fedlake.client.runtime' not in sys.modules\n"
        "import fedlake.client.runtime\n"
        "assert not [m for m in sys.modules if m.startswith('fedlake.simulation')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
