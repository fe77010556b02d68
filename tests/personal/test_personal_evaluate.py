"""personal_params and evaluate_personal: the model each client uses, on its own test split."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from toy import ToyTrainer

from fedlake.client.local import client_key
from fedlake.client.logreg import LogRegTrainer
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization, personal_mask
from fedlake.core.state import round_rng
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.personal.client import PERSONAL
from fedlake.personal.evaluate import PERSONAL_RNG, evaluate_personal, personal_params

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


def test_finetune_is_a_direct_fit_on_the_train_split_with_the_same_rng():
    ds = logreg_data().load("a")
    p = Personalization("finetune", epochs=2, lr=0.05)
    g = np.array([0.1, -0.2, 0.3, 0.0, 0.1, -0.1], np.float32)
    got = personal_params(
        p,
        trainer=LOGREG,
        global_params=g,
        kept=None,
        x_train=ds.x_train,
        y_train=ds.y_train,
        config=CONFIG,
        rng=np.random.default_rng(3),
        mask=None,
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
        kept=None,
        x_train=empty,
        y_train=np.zeros(0, np.int64),
        config=CONFIG,
        rng=np.random.default_rng(0),
        mask=None,
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
        client_states={"a": {PERSONAL: v}, "b": {PERSONAL: v}, "c": {PERSONAL: v}},
        config=CONFIG,
        seed=0,
        round_=1,
        mask=None,
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
    ("p", "states"),
    [
        (Personalization("ditto"), {}),
        (Personalization("ditto"), {"a": None, "b": {"residual": np.zeros(6, np.float32)}}),
        (Personalization("fedper", layers=("bias",)), {}),
        (Personalization("fedper", layers=("bias",)), {"a": {}, "b": None}),
    ],
)
def test_clients_never_seen_use_the_global_model(p, states):
    data = logreg_data()
    g = np.array([0.5, -0.5, -0.5, 0.5, 0.1, 0.0], np.float32)
    out = evaluate_personal(
        p,
        trainer=LOGREG,
        data=data,
        client_ids=["a", "b"],
        global_params=g,
        client_states=states,
        config=CONFIG,
        seed=0,
        round_=0,
        mask=personal_mask(LOGREG.spec, p.layers) if p.layers else None,
    )
    loss, acc = global_metrics(data, g)
    assert out["personal_loss"] == pytest.approx(loss, rel=1e-12)
    assert out["personal_accuracy"] == pytest.approx(acc, rel=1e-12)
    assert (out["personal_clients"], out["personal_seen"], out["personal_examples"]) == (2, 0, 20)


def test_fedper_evaluates_global_shared_with_kept_personal_values():
    data = logreg_data()
    g = np.array([0.5, -0.5, -0.5, 0.5, 0.1, 0.0], np.float32)
    p = Personalization("fedper", layers=("bias",))
    mask = personal_mask(LOGREG.spec, p.layers)
    own = np.array([3.0, -3.0], np.float32)
    out = evaluate_personal(
        p,
        trainer=LOGREG,
        data=data,
        client_ids=["a"],
        global_params=g,
        client_states={"a": {PERSONAL: own}},
        config=CONFIG,
        seed=0,
        round_=0,
        mask=mask,
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
        client_states={},
        config=CONFIG,
        seed=5,
        round_=4,
        mask=None,
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
    with pytest.raises(ValueError, match=r"no client has a test split .*\(1 clients given\)"):
        evaluate_personal(
            Personalization("ditto"),
            trainer=LOGREG,
            data=data,
            client_ids=["a"],
            global_params=np.zeros(6, np.float32),
            client_states={},
            config=CONFIG,
            seed=0,
            round_=0,
            mask=None,
        )


def test_the_package_does_not_import_the_client_round():
    # fedlake.client.local imports fedlake.personal; the reverse import must stay lazy.
    code = "import sys, fedlake.personal; assert 'fedlake.client.local' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
