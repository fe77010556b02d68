"""Ditto: each client's personal model trains with a pull towards the global model."""

from dataclasses import replace

import numpy as np
import pytest

from fedlake.algorithms import fedavg, personalized
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.runtime import ClientRuntime
from fedlake.client.stores import MemoryStateStore
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization
from fedlake.core.plugin import ClientPlugin, RoundContext
from fedlake.core.task import ClientReply, ClientTask, local_steps
from fedlake.data.base import ClientDataset, InMemoryClientData
from fedlake.plugins.personal import personalization
from fedlake.transforms.local import proximal

TRAINER = LogRegTrainer(num_features=2, num_classes=2)
CONFIG = LocalConfig(epochs=1, batch_size=10, lr=0.3, max_steps=2)
RNG = np.random.default_rng(42)
X = RNG.normal(size=(60, 2)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)
G = np.array([0.2, -0.1, -0.2, 0.1, 0.05, -0.05], np.float32)  # the global model
LOCAL = G + 0.5  # what the client's global-model training returned
DATASET = ClientDataset(X, Y, X[:10], Y[:10])
TASK = ClientTask(
    round=0, attempt=0, seed=0, model=encode_model(G, None, None, np.random.default_rng(0))
)


def context(seed=7, config=CONFIG, **kw) -> RoundContext:
    """One client's round as the runtime builds it, with ``rng`` seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return RoundContext(
        client_id="c",
        task=TASK,
        trainer=TRAINER,
        dataset=DATASET,
        rng=rng,
        encode_rng=rng,
        config=config,
        global_params=G,
        total_steps=local_steps(len(Y), config.batch_size, config.epochs),
        **kw,
    )


def hook(plugin: ClientPlugin, name: str, ctx: RoundContext, state):
    """Run ``plugin``'s hook ``name`` as the runtime does (absent: nothing changes)."""
    fn = getattr(plugin, name)
    return (ctx, state) if fn is None else fn(ctx, state)


def start_of(p, state):
    """Where ``p``'s client trains from, given its kept state."""
    ctx, _ = hook(personalization(p), "before_fit", context(), state)
    return ctx.start_params


def ditto_finish(p, state, seed=7, config=CONFIG):
    """``(params whose delta is uploaded, state kept)`` after local training returned LOCAL."""
    ctx, kept = hook(personalization(p), "after_fit", context(seed, config, upload=LOCAL), state)
    return ctx.upload, kept


def test_ditto_trains_from_the_global_model_and_uploads_plain_local_training():
    p = Personalization("ditto", lam=0.5)
    start = start_of(p, np.ones(6, np.float32))
    np.testing.assert_array_equal(start, G)  # the global update is plain local SGD
    upload, keep = ditto_finish(p, state=None)
    np.testing.assert_array_equal(upload, LOCAL)
    assert keep.dtype == np.float32 and keep.shape == (6,)


def test_with_lam_zero_the_personal_model_is_plain_local_training_from_v():
    p = Personalization("ditto", lam=0.0, epochs=3, lr=0.2)
    v = np.array([1.0, -1.0, 0.5, 0.0, 0.3, -0.3], np.float32)
    _, keep = ditto_finish(p, state=v)
    cfg = replace(CONFIG, epochs=3, lr=0.2, max_steps=None)
    direct = TRAINER.fit(v, X, Y, config=cfg, rng=np.random.default_rng(7)).params
    np.testing.assert_array_equal(keep, direct)


def test_the_personal_update_is_the_proximal_fit_anchored_at_the_global_model():
    p = Personalization("ditto", lam=0.8, epochs=2)  # lr None: the client lr
    v = np.full(6, 0.7, np.float32)
    _, keep = ditto_finish(p, state=v)
    cfg = replace(CONFIG, epochs=2, max_steps=None)
    direct = TRAINER.fit(
        v, X, Y, config=cfg, rng=np.random.default_rng(7), grad_transform=proximal(0.8, anchor=G)
    ).params
    np.testing.assert_array_equal(keep, direct)
    # a first-time client starts its personal model at the global one
    _, first = ditto_finish(p, state=None)
    direct = TRAINER.fit(
        G, X, Y, config=cfg, rng=np.random.default_rng(7), grad_transform=proximal(0.8, anchor=G)
    ).params
    np.testing.assert_array_equal(first, direct)


def test_with_a_huge_lam_the_personal_model_stays_at_the_global_model():
    far = G + 5.0  # a personal model far from the global one
    stiff = Personalization("ditto", lam=100.0, epochs=5, lr=0.01)  # lam * lr = 1
    loose = Personalization("ditto", lam=0.0, epochs=5, lr=0.01)
    _, pulled = ditto_finish(stiff, state=far)
    _, free = ditto_finish(loose, state=G)
    gap = float(np.abs(pulled - G).max())
    assert gap < 0.01  # within one data step (lr * |grad|) of the global model
    assert gap < 0.1 * float(np.abs(free - G).max())


def test_ditto_refuses_a_kept_model_of_another_size_and_an_unstable_pull():
    with pytest.raises(ValueError, match=r"kept personal state has shape \(5,\), expected \(6,\)"):
        ditto_finish(Personalization("ditto"), state=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"ditto lam \* lr must be <= 2"):
        ditto_finish(Personalization("ditto", lam=10.0), state=None)  # 10 * 0.3 = 3


def run_one(p):
    """One round of ``p`` on one client through the runtime: its reply and its store."""
    algo = replace(fedavg(), local=CONFIG)
    if p is not None:
        algo = personalized(algo, p)
    store = MemoryStateStore()
    runtime = ClientRuntime(InMemoryClientData({"c": DATASET}), TRAINER, algo, store)
    reply = runtime.handle(TASK, "c")
    assert isinstance(reply, ClientReply), reply
    return decode_reply(reply, G.size, None, None).delta, store


def test_finetune_uploads_the_local_params_and_keeps_nothing():
    upload, keep = ditto_finish(Personalization("finetune"), state=G)
    np.testing.assert_array_equal(upload, LOCAL)
    plugin = personalization(Personalization("finetune"))
    hooks = ("before_fit", "after_fit", "on_delta", "before_encode", "finish", "commit")
    assert all(getattr(plugin, h) is None for h in hooks)  # no state to keep, ever
    # through the runtime: the very update of plain local training, and nothing stored
    delta, store = run_one(Personalization("finetune"))
    plain, _ = run_one(None)
    assert np.abs(plain).max() > 0
    np.testing.assert_array_equal(delta, plain)
    assert store.load("c") is None


def test_ditto_through_the_runtime_uploads_plain_local_training_and_keeps_v():
    delta, store = run_one(Personalization("ditto", lam=0.5))
    plain, _ = run_one(None)
    np.testing.assert_array_equal(delta, plain)
    record = store.load("c")
    assert list(record) == ["states"] and list(record["states"]) == ["ditto"]
    v = record["states"]["ditto"]
    assert v.dtype == np.float32 and v.shape == G.shape and not np.array_equal(v, G)
