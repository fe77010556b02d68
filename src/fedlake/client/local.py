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
from fedlake.client.dp_budget import (
    DP_HISTORY,
    check_budget,
    history_of,
    planned_round,
    steps_per_epoch,
)
from fedlake.client.trainer import FitResult, Trainer
from fedlake.client.workload import FULL, STRAGGLER, Workload, local_steps
from fedlake.compression.messages import encode_delta
from fedlake.compression.pruning import mask_gradients
from fedlake.core.algorithm import Algorithm, LocalConfig
from fedlake.core.codec import Codec
from fedlake.core.personal import mask_for
from fedlake.core.state import round_rng
from fedlake.core.transform import Transform, chain
from fedlake.core.update import CONTROL, DELTA, ClientUpdate
from fedlake.data.base import ClientData
from fedlake.personal.client import finish as finish_personal
from fedlake.personal.client import start_params
from fedlake.transforms.local import add_correction

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
    clients that run the job's attack this round (simulation only). ``work`` lists the
    clients that do only part of their local work (stragglers, a deadline);
    ``control`` is SCAFFOLD's server control variate, shipped with the model.
    """

    round: int
    attempt: int
    params: np.ndarray
    seed: int
    mask: np.ndarray | None = None
    states: Mapping[str, Any] = field(default_factory=dict)
    malicious: frozenset[str] = frozenset()
    work: Mapping[str, Workload] = field(default_factory=dict)
    control: np.ndarray | None = None

    def only(self, client_ids: Sequence[str]) -> ClientTask:
        """This task carrying only the states and workloads of ``client_ids`` (one chunk)."""
        keep = {c: self.states[c] for c in client_ids if c in self.states}
        work = {c: self.work[c] for c in client_ids if c in self.work}
        return replace(self, states=keep, work=work)


@dataclass(frozen=True)
class ClientFailure:
    """A client that returned nothing (crash, lost connection, data error).

    ``status`` is ``"failed"``, or ``"dropped"`` for a straggler the server did not wait for.
    """

    client_id: str
    reason: str
    status: str = "failed"


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

    def run_many(self, task: ClientTask, client_ids: Sequence[str]) -> list[ClientResult]:
        """Run clients together, vectorised where the trainer allows (else one by one)."""
        from fedlake.client.cohort_run import run_cohort  # cohort_run imports this module

        return run_cohort(self, task, client_ids)


@dataclass
class Prepared:
    """One client's round up to local training: its data, start point and local step."""

    client_id: str
    t0: float
    rng: np.random.Generator
    x: np.ndarray
    y: np.ndarray
    claimed: int | None  # a poisoning client reports its clean example count (stealthier)
    kept: Mapping[str, Any]
    history: tuple[Any, ...]
    global_params: np.ndarray
    config: LocalConfig
    local_step: Transform | None  # the recipe's step and the pruning mask, not SCAFFOLD's
    trainable: np.ndarray | None
    encode_rng: np.random.Generator
    total_steps: int  # the full local work, in steps (a straggler does fewer)
    start: np.ndarray | None = None  # where training starts (FedPer: own layers); None: global
    personal_mask: np.ndarray | None = None  # FedPer: the positions that never leave
    control: np.ndarray | None = None  # SCAFFOLD: this client's c_i
    correction: np.ndarray | None = None  # SCAFFOLD: c - c_i, added to every gradient

    @property
    def start_params(self) -> np.ndarray:
        """The params local training starts from."""
        return self.global_params if self.start is None else self.start

    def grad_transform(self) -> Transform | None:
        """The local step of this client alone (with its SCAFFOLD correction)."""
        return corrected(self.local_step, self.correction)


def corrected(step: Transform | None, correction: np.ndarray | None) -> Transform | None:
    """``step`` after SCAFFOLD's gradient correction (one client's (d,) or a stack's (m, d))."""
    if correction is None:
        return step
    fix = add_correction(correction)
    return fix if step is None else chain(fix, step)


def prepare_client(
    task: ClientTask,
    client_id: str,
    data: ClientData,
    trainer: Trainer,
    algorithm: Algorithm,
    *,
    attack: Attack | None = None,
) -> Prepared | ClientFailure:
    """Everything before local training; a straggler the server will not wait for is a failure."""
    t0 = time.perf_counter()
    rng = round_rng(task.seed, task.round, CLIENT_RNG, task.attempt, client_key(client_id))
    ds = data.load(client_id)
    if ds.num_train == 0:
        raise ValueError(f"client {client_id!r} has no training examples")
    config = algorithm.local
    total = (
        config.epochs * steps_per_epoch(ds.num_train, config.batch_size)  # DP-SGD's rule
        if config.dp is not None
        else local_steps(ds.num_train, config.batch_size, config.epochs)
    )
    steps = task.work.get(client_id, FULL).steps(total)
    if steps < total:
        if steps == 0 or task.work[client_id].drop_partial:
            return ClientFailure(
                client_id,
                f"{STRAGGLER}: {steps} of its {total} local steps done by the deadline",
                status="dropped",
            )
        config = replace(config, max_steps=steps)
    x, y, claimed = ds.x_train, ds.y_train, None
    if attack is not None and client_id in task.malicious:  # data poisoning (simulation)
        claimed = ds.num_train
        poison_rng = round_rng(
            task.seed, task.round, ATTACK_RNG, task.attempt, POISON, client_key(client_id)
        )
        ds = attack.poison(ds, poison_rng)
        x, y = ds.x_train, ds.y_train
    kept = task.states.get(client_id) or {}
    dp = algorithm.local.dp
    history = history_of(kept)
    if dp is not None:  # DP-SGD: the client refuses a round past its own budget
        nxt = planned_round(dp, algorithm.local, ds.num_train)
        check_budget(dp, history, nxt)
        history = (*history, nxt)
    global_params = np.asarray(task.params, dtype=np.float32)
    trainable, encode_rng = _trainable(
        task.mask, algorithm.compression.upload, global_params.size, rng
    )
    local_step = algorithm.local_step
    if trainable is not None:  # pruned (or, structured, unsent) weights do not train
        masked = mask_gradients(trainable)
        local_step = masked if local_step is None else chain(local_step, masked)
    prep = Prepared(
        client_id=client_id,
        t0=t0,
        rng=rng,
        x=x,
        y=y,
        claimed=claimed,
        kept=kept,
        history=history,
        global_params=global_params,
        config=config,
        local_step=local_step,
        trainable=trainable,
        encode_rng=encode_rng,
        total_steps=total,
    )
    if algorithm.personal is not None:
        prep.personal_mask = mask_for(algorithm.personal, trainer.spec)
        if prep.personal_mask is not None:
            prep.start = start_params(algorithm.personal, global_params, kept, prep.personal_mask)
    if algorithm.scaffold:
        if task.control is None:
            raise ValueError("SCAFFOLD needs the server's control variate in the task")
        own = kept.get(CONTROL)
        if own is None or own.shape != global_params.shape:  # first round of this client
            own = np.zeros_like(global_params)
        prep.control = own
        prep.correction = np.asarray(task.control, dtype=np.float32) - own
    return prep


def finish_client(
    prep: Prepared, fit: FitResult, task: ClientTask, trainer: Trainer, algorithm: Algorithm
) -> ClientUpdate:
    """Everything after local training: the processed, encoded delta and what the client keeps."""
    global_params = prep.global_params
    local = np.asarray(fit.params)
    if local.shape != global_params.shape:
        raise ValueError(
            f"local training returned parameters of shape {local.shape}, "
            f"expected {global_params.shape}"
        )
    kept_now: dict[str, Any] = {}
    sent = upload_mask(task.mask, prep.personal_mask)  # FedPer's layers never leave
    if algorithm.personal is not None:  # FedPer keeps its layers, Ditto its own model
        local, personal_state = finish_personal(
            algorithm.personal,
            trainer=trainer,
            global_params=global_params,
            local_params=local,
            x=prep.x,
            y=prep.y,
            config=prep.config,
            rng=prep.rng,
            kept=prep.kept,
            mask=prep.personal_mask,
        )
        kept_now.update(personal_state)
    delta = np.asarray(local).astype(np.float32) - global_params
    encoded: dict[str, bytes] = {}
    if prep.control is not None:  # SCAFFOLD option II: c_i+ = c_i - c + (x - y_i) / (K lr)
        assert task.control is not None
        scale_ = np.float32(1.0 / (fit.steps * prep.config.lr))
        new_control = prep.control - np.asarray(task.control, np.float32) - delta * scale_
        if sent is not None:  # positions never uploaded (pruned) keep their c_i, like c
            new_control = np.where(sent, new_control, prep.control)
        if not np.isfinite(new_control).all():
            raise ValueError("local training diverged: non-finite control variate")
        encoded[CONTROL], _ = encode_delta(
            new_control - prep.control, sent, None, prep.encode_rng, None
        )
        kept_now[CONTROL] = new_control
    upload_state = algorithm.upload.init(global_params)
    delta, _ = algorithm.upload.update(delta, upload_state, params=global_params, rng=prep.rng)
    if not np.isfinite(delta).all():  # diverged: nothing worth sending or remembering
        bad = int((~np.isfinite(delta)).sum())
        raise ValueError(
            f"local training diverged: {bad} non-finite values (NaN/Inf) in the update"
        )
    compression = algorithm.compression
    residual = None
    if compression.error_feedback:
        residual = prep.kept.get(RESIDUAL)
        if residual is None or residual.shape != delta.shape:  # first round of this client
            residual = np.zeros_like(delta, dtype=np.float32)
    payload, residual = encode_delta(delta, sent, compression.upload, prep.encode_rng, residual)
    encoded = {DELTA: payload, **encoded}
    if residual is not None:
        kept_now[RESIDUAL] = residual
    if prep.history:
        kept_now[DP_HISTORY] = prep.history
    examples = float(fit.num_examples if prep.claimed is None else prep.claimed)
    metrics = {
        "train_loss": float(fit.loss),
        "num_examples": examples,
        "steps": float(fit.steps),
        "duration_s": time.perf_counter() - prep.t0,
    }
    if prep.config.max_steps is not None:  # a straggler's partial work
        metrics["work_fraction"] = fit.steps / prep.total_steps
    if fit.privacy is not None:  # DP-SGD facts, for the server's privacy ledger
        metrics.update({f"dp_{k}": float(v) for k, v in fit.privacy.items()})
    if algorithm.private_reports:  # local DP: only the noised update leaves the device
        examples, metrics = 1.0, {}
    return ClientUpdate(
        client_id=prep.client_id,
        vectors={},
        weight=examples,
        metrics=metrics,
        encoded=encoded,
        client_state=kept_now or None,
    )


def run_client(
    task: ClientTask,
    client_id: str,
    data: ClientData,
    trainer: Trainer,
    algorithm: Algorithm,
    *,
    attack: Attack | None = None,
) -> ClientResult:
    """Train ``client_id`` from the task's global params and return its processed delta."""
    prep = prepare_client(task, client_id, data, trainer, algorithm, attack=attack)
    if isinstance(prep, ClientFailure):
        return prep
    fit = trainer.fit(
        prep.start_params,
        prep.x,
        prep.y,
        config=prep.config,
        rng=prep.rng,
        grad_transform=prep.grad_transform(),
    )
    return finish_client(prep, fit, task, trainer, algorithm)


def upload_mask(prune: np.ndarray | None, personal: np.ndarray | None) -> np.ndarray | None:
    """The positions an upload carries: surviving (not pruned) and shared (not personal)."""
    if personal is None:
        return prune
    shared = ~personal
    return shared if prune is None else prune & shared


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
