"""Ditto: each client's personal model trains with a pull towards the global model."""

from dataclasses import replace

import numpy as np
import pytest

from fedlake.client.logreg import LogRegTrainer
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization
from fedlake.personal.client import PERSONAL, finish, start_params
from fedlake.transforms.local import proximal

TRAINER = LogRegTrainer(num_features=2, num_classes=2)
CONFIG = LocalConfig(epochs=1, batch_size=10, lr=0.3, max_steps=2)
RNG = np.random.default_rng(42)
X = RNG.normal(size=(60, 2)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)
G = np.array([0.2, -0.1, -0.2, 0.1, 0.05, -0.05], np.float32)  # the global model
LOCAL = G + 0.5  # what the client's global-model training returned


def ditto_finish(p, kept, seed=7, config=CONFIG):
    return finish(
        p,
        trainer=TRAINER,
        global_params=G,
        local_params=LOCAL,
        x=X,
        y=Y,
        config=config,
        rng=np.random.default_rng(seed),
        kept=kept,
        mask=None,
    )


def test_ditto_trains_from_the_global_model_and_uploads_plain_local_training():
    p = Personalization("ditto", lam=0.5)
    start = start_params(p, G, {PERSONAL: np.ones(6, np.float32)}, None)
    np.testing.assert_array_equal(start, G)  # the global update is plain local SGD
    upload, keep = ditto_finish(p, kept=None)
    np.testing.assert_array_equal(upload, LOCAL)
    assert list(keep) == [PERSONAL] and keep[PERSONAL].dtype == np.float32


def test_with_lam_zero_the_personal_model_is_plain_local_training_from_v():
    p = Personalization("ditto", lam=0.0, epochs=3, lr=0.2)
    v = np.array([1.0, -1.0, 0.5, 0.0, 0.3, -0.3], np.float32)
    _, keep = ditto_finish(p, kept={PERSONAL: v, "residual": None})
    cfg = replace(CONFIG, epochs=3, lr=0.2, max_steps=None)
    direct = TRAINER.fit(v, X, Y, config=cfg, rng=np.random.default_rng(7)).params
    np.testing.assert_array_equal(keep[PERSONAL], direct)


def test_the_personal_update_is_the_proximal_fit_anchored_at_the_global_model():
    p = Personalization("ditto", lam=0.8, epochs=2)  # lr None: the client lr
    v = np.full(6, 0.7, np.float32)
    _, keep = ditto_finish(p, kept={PERSONAL: v})
    cfg = replace(CONFIG, epochs=2, max_steps=None)
    direct = TRAINER.fit(
        v, X, Y, config=cfg, rng=np.random.default_rng(7), grad_transform=proximal(0.8, anchor=G)
    ).params
    np.testing.assert_array_equal(keep[PERSONAL], direct)
    # a first-time client starts its personal model at the global one
    _, first = ditto_finish(p, kept=None)
    direct = TRAINER.fit(
        G, X, Y, config=cfg, rng=np.random.default_rng(7), grad_transform=proximal(0.8, anchor=G)
    ).params
    np.testing.assert_array_equal(first[PERSONAL], direct)


def test_with_a_huge_lam_the_personal_model_stays_at_the_global_model():
    far = G + 5.0  # a personal model far from the global one
    stiff = Personalization("ditto", lam=100.0, epochs=5, lr=0.01)  # lam * lr = 1
    loose = Personalization("ditto", lam=0.0, epochs=5, lr=0.01)
    _, pulled = ditto_finish(stiff, kept={PERSONAL: far})
    _, free = ditto_finish(loose, kept={PERSONAL: G})
    gap = float(np.abs(pulled[PERSONAL] - G).max())
    assert gap < 0.01  # within one data step (lr * |grad|) of the global model
    assert gap < 0.1 * float(np.abs(free[PERSONAL] - G).max())


def test_ditto_refuses_a_kept_model_of_another_size_and_an_unstable_pull():
    with pytest.raises(ValueError, match=r"kept personal state has shape \(5,\), expected \(6,\)"):
        ditto_finish(Personalization("ditto"), kept={PERSONAL: np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match=r"ditto lam \* lr must be <= 2"):
        ditto_finish(Personalization("ditto", lam=10.0), kept=None)  # 10 * 0.3 = 3


def test_finetune_finish_uploads_the_local_params_and_keeps_nothing():
    upload, keep = ditto_finish(Personalization("finetune"), kept={PERSONAL: G})
    np.testing.assert_array_equal(upload, LOCAL)
    assert keep == {}
