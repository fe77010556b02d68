"""What one client does in a round: load data, train locally, send back a delta."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from fedlake.attacks.base import ATTACK_RNG, POISON, Attack
from fedlake.client.dp_budget import DP_HISTORY, check_budget, history_of, planned_round
from fedlake.client.trainer import Trainer
from fedlake.compression.messages import encode_delta
from fedlake.compression.pruning import mask_gradients
from fedlake.core.algorithm import Algorithm
from fedlake.core.codec import Codec
from fedlake.core.state import round_rng
from fedlake.core.transform import chain
from fedlake.core.update import DELTA, ClientUpdate
from fedlake.data.base import ClientData

CLIENT_RNG = 3  # purpose tag of client-side generators
RESIDUAL = "residual"  # client state key of the error-feedback residual


def client_key(client_id: str) -> int:
    """A stable integer for a client id (Python's hash() is salted per process)."""
    return zlib.crc32(client_id.encode("utf-8"))


@dataclass(frozen=True)
class ClientTask:
    """What the server ships to every client of a round.

    ``params`` is the model as clients decode it from the download message (quantised
    when the download is compressed) and ``mask`` the surviving weights when the model
    is pruned. ``states`` holds, per client, what that client kept from its last round
    (simulation only: on a device it never leaves the device). ``malicious`` names the
    clients that run the job's attack this round (simulation only).
    """

    round: int
    attempt: int
    params: np.ndarray
    seed: int
    mask: np.ndarray | None = None
    states: Mapping[str, Any] = field(default_factory=dict)
    malicious: frozenset[str] = frozenset()

    def only(self, client_ids: Sequence[str]) -> ClientTask:
        """This task carrying only the states of ``client_ids`` (for one worker's chunk)."""
        keep = {c: self.states[c] for c in client_ids if c in self.states}
        return replace(self, states=keep)


@dataclass(frozen=True)
class ClientFailure:
    """A client that returned nothing (crash, lost connection, data error)."""

    client_id: str
    reason: str


ClientResult = ClientUpdate | ClientFailure


@dataclass(frozen=True)
class ClientJob:
    """Everything a worker needs to run clients; picklable for spawn-based pools.

    ``make_algorithm`` is a picklable zero-argument factory (e.g. a
    ``functools.partial`` of a recipe) because transforms are closures; the
    algorithm is built once per job object, on first use, in each process. ``attack``
    is what the task's malicious clients do to their data (simulation only).
    """

    data: ClientData
    trainer: Trainer
    make_algorithm: Callable[[], Algorithm]
    attack: Attack | None = None

    @cached_property
    def algorithm(self) -> Algorithm:
        """The recipe, built once per job object (it lives on the object, never in a global)."""
        return self.make_algorithm()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("algorithm", None)  # closures do not pickle; each process rebuilds its own
        return state

    def run(self, task: ClientTask, client_id: str) -> ClientResult:
        """Run one client, turning any exception into a ClientFailure."""
        try:
            return run_client(
                task, client_id, self.data, self.trainer, self.algorithm, attack=self.attack
            )
        except Exception as exc:  # a client's failure must never stop the round
            return ClientFailure(client_id, f"{type(exc).__name__}: {exc}")


def run_client(
    task: ClientTask,
    client_id: str,
    data: ClientData,
    trainer: Trainer,
    algorithm: Algorithm,
    *,
    attack: Attack | None = None,
) -> ClientUpdate:
    """Train ``client_id`` from the task's global params and return its processed delta."""
    t0 = time.perf_counter()
    rng = round_rng(task.seed, task.round, CLIENT_RNG, task.attempt, client_key(client_id))
    ds = data.load(client_id)
    if ds.num_train == 0:
        raise ValueError(f"client {client_id!r} has no training examples")
    claimed = None  # a poisoning client reports its clean example count (stealthier)
    if attack is not None and client_id in task.malicious:  # data poisoning (simulation)
        claimed = ds.num_train
        poison_rng = round_rng(
            task.seed, task.round, ATTACK_RNG, task.attempt, POISON, client_key(client_id)
        )
        ds = attack.poison(ds, poison_rng)
    kept = task.states.get(client_id) or {}
    dp = algorithm.local.dp
    history = history_of(kept)
    if dp is not None:  # DP-SGD: the client refuses a round past its own budget
        nxt = planned_round(dp, algorithm.local, ds.num_train)
        check_budget(dp, history, nxt)
        history = (*history, nxt)
    global_params = np.asarray(task.params, dtype=np.float32)
    compression = algorithm.compression
    trainable, encode_rng = _trainable(task.mask, compression.upload, global_params.size, rng)
    local_step = algorithm.local_step
    if trainable is not None:  # pruned (or, structured, unsent) weights do not train
        masked = mask_gradients(trainable)
        local_step = masked if local_step is None else chain(local_step, masked)
    fit = trainer.fit(
        global_params,
        ds.x_train,
        ds.y_train,
        config=algorithm.local,
        rng=rng,
        grad_transform=local_step,
    )
    local = np.asarray(fit.params)
    if local.shape != global_params.shape:
        raise ValueError(
            f"local training returned parameters of shape {local.shape}, "
            f"expected {global_params.shape}"
        )
    delta = local.astype(np.float32) - global_params
    upload_state = algorithm.upload.init(global_params)
    delta, _ = algorithm.upload.update(delta, upload_state, params=global_params, rng=rng)
    if not np.isfinite(delta).all():  # diverged: nothing worth sending or remembering
        bad = int((~np.isfinite(delta)).sum())
        raise ValueError(
            f"local training diverged: {bad} non-finite values (NaN/Inf) in the update"
        )
    residual = None
    if compression.error_feedback:
        residual = kept.get(RESIDUAL)
        if residual is None or residual.shape != delta.shape:  # first round of this client
            residual = np.zeros_like(delta, dtype=np.float32)
    payload, residual = encode_delta(delta, task.mask, compression.upload, encode_rng, residual)
    kept_now: dict[str, Any] = {RESIDUAL: residual} if residual is not None else {}
    if history:
        kept_now[DP_HISTORY] = history
    new_state = kept_now or None
    examples = float(fit.num_examples if claimed is None else claimed)
    metrics = {
        "train_loss": float(fit.loss),
        "num_examples": examples,
        "steps": float(fit.steps),
        "duration_s": time.perf_counter() - t0,
    }
    if fit.privacy is not None:  # DP-SGD facts, for the server's privacy ledger
        metrics.update({f"dp_{k}": float(v) for k, v in fit.privacy.items()})
    if algorithm.private_reports:  # local DP: only the noised update leaves the device
        examples, metrics = 1.0, {}
    return ClientUpdate(
        client_id=client_id,
        vectors={},
        weight=examples,
        metrics=metrics,
        encoded={DELTA: payload},
        client_state=new_state,
    )


def _trainable(
    mask: np.ndarray | None, upload: Codec | None, dim: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.random.Generator]:
    """Which weights a client trains, and the generator its upload is encoded with.

    Pruned weights never train. With a structured upload (Konecny et al., 2016) the
    client also draws its random mask before training and trains only those weights;
    the encoder, given an identically seeded generator, keeps exactly them.
    """
    if upload is None or upload.train_positions is None:
        return mask, rng
    key = int(rng.integers(0, 2**63))
    surviving = np.arange(dim) if mask is None else np.flatnonzero(mask)
    chosen = upload.train_positions(surviving.size, np.random.default_rng(key))
    trainable = np.zeros(dim, dtype=bool)
    trainable[surviving[chosen]] = True
    return trainable, np.random.default_rng(key)
