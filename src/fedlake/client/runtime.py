"""The client runtime: a task in, a reply (or a typed failure) out, the client's state kept.

``ClientRuntime(data, trainer, algorithm, store).handle(task, client_id)`` is what one
client does in a round, wherever it runs: inline in the simulator, in a worker process,
on a Spark executor or on the data owner's machine. It decodes the model from the task's
bytes, loads the client's record from its own store (committing or dropping state that
waited for the server's acknowledgement), runs local training with the algorithm's
plugins at their hooks, encodes the update, and saves what the client keeps. The server
never sees that state. :meth:`ClientRuntime.handle_many` answers many clients of one
process at once, training them as one stacked cohort where the trainer allows
(``fedlake.client.cohort``), with the same numbers as one by one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedlake.client.cohort import fit_cohort
from fedlake.client.masks import corrected, trainable, upload_mask
from fedlake.client.records import committed_states, next_record
from fedlake.client.secure import RECORD_KEY as SECAGG_KEY
from fedlake.client.stores import ClientStateStore, MemoryStateStore
from fedlake.compression.messages import decode_model, encode_delta
from fedlake.compression.pruning import mask_gradients
from fedlake.core.algorithm import Algorithm
from fedlake.core.plugin import ClientPlugin, ClientRefusal, RoundContext
from fedlake.core.recycle import TRAINING
from fedlake.core.rng import CLIENT_RNG, client_key, round_rng
from fedlake.core.task import (
    STRAGGLER,
    ClientFailure,
    ClientOutcome,
    ClientReply,
    ClientTask,
    FailureReason,
    SecureStage,
    local_steps,
)
from fedlake.core.trainer import FitResult, Trainer
from fedlake.core.transform import Transform, chain
from fedlake.core.update import DELTA
from fedlake.data.base import ClientData
from fedlake.plugins.dpsgd_budget import steps_per_epoch

__all__ = ["ClientRuntime", "failure_of"]

_DELTAS = TRAINING  # updates' arrays, reused once encoded and let go


def failure_of(client_id: str, exc: Exception) -> ClientFailure:
    """The typed failure of a client whose round raised ``exc``."""
    if isinstance(exc, ClientRefusal):
        return ClientFailure(client_id, FailureReason.REFUSED, str(exc))
    return ClientFailure(client_id, FailureReason.ERROR, f"{type(exc).__name__}: {exc}")


@dataclass
class _Round:
    """One client's round in flight: its context, plugins and their states, its record."""

    ctx: RoundContext
    plugins: tuple[ClientPlugin, ...]
    states: dict[str, Any]
    committed: dict[str, Any]
    t0: float
    stored: bool = field(default=False)


class ClientRuntime:
    """Answers tasks for the clients whose data, trainer and store it holds.

    Args:
        data: the clients' data (one client's, on a device; many, in a simulation).
        trainer: trains and evaluates the model on flat params.
        algorithm: what clients compute (local training, upload, plugins).
        store: where each client keeps its state between rounds.
        variants: other client programs by name, as extra plugins run before the
            algorithm's (the simulator's malicious clients).
    """

    def __init__(
        self,
        data: ClientData,
        trainer: Trainer,
        algorithm: Algorithm,
        store: ClientStateStore | None = None,
        *,
        variants: Mapping[str, tuple[ClientPlugin, ...]] | None = None,
    ) -> None:
        self.data = data
        self.trainer = trainer
        self.algorithm = algorithm
        self.store: ClientStateStore = store if store is not None else MemoryStateStore()
        self.variants = dict(variants or {})
        self._kept_local = algorithm.kept_local(trainer.spec)
        self._model: tuple[bytes, np.ndarray, np.ndarray | None] | None = None

    # -- public ---------------------------------------------------------------------------
    def handle(self, task: ClientTask, client_id: str, variant: str | None = None) -> ClientOutcome:
        """Run ``client_id``'s round of ``task``: its reply, or a typed failure."""
        if _key_exchange(task):  # a secure stage that does not train
            return self._answer_stage(task, client_id)
        failed: dict[str, ClientOutcome] = {}
        run = self._try_prepare(task, client_id, variant, failed)
        return failed[client_id] if run is None else self._alone(run)

    def handle_many(
        self,
        task: ClientTask,
        client_ids: Sequence[str],
        variants: Mapping[str, str] | None = None,
    ) -> list[ClientOutcome]:
        """Every client's outcome, in ``client_ids`` order, trained together where possible.

        Each client is prepared and finished exactly as :meth:`handle` does (same
        generators, consumed in the same order); only local training is shared. If the
        shared training fails, every client is rerun alone so a failure stays its own.
        """
        variants = variants or {}
        if _key_exchange(task):
            return [self._answer_stage(task, cid) for cid in client_ids]
        results: dict[str, ClientOutcome] = {}
        runs: list[_Round] = []
        for cid in client_ids:
            run = self._try_prepare(task, cid, variants.get(cid), results)
            if run is not None:
                runs.append(run)
        fits: list[FitResult] | None = None
        if self._vectorisable(runs):
            first = runs[0].ctx
            try:
                fits = fit_cohort(
                    self.trainer,
                    first.global_params,
                    [(r.ctx.dataset.x_train, r.ctx.dataset.y_train) for r in runs],
                    config=self.algorithm.local,
                    rngs=[r.ctx.rng for r in runs],
                    max_steps=[r.ctx.config.max_steps for r in runs],
                    grad_transform=_stacked_step(runs, first.local_step),
                )
            except Exception:  # find the culprit: fresh preparations, one client at a time
                fits = None
                again = (
                    self._try_prepare(task, r.ctx.client_id, variants.get(r.ctx.client_id), results)
                    for r in runs
                )
                runs = [r for r in again if r is not None]
        if fits is None:
            for run in runs:
                results[run.ctx.client_id] = self._alone(run)
        else:
            for run, fit in zip(runs, fits, strict=True):
                try:
                    results[run.ctx.client_id] = self._finish(run, fit)
                except Exception as exc:
                    results[run.ctx.client_id] = failure_of(run.ctx.client_id, exc)
        return [results[cid] for cid in client_ids]

    def model(self, task: ClientTask) -> tuple[np.ndarray, np.ndarray | None]:
        """The global model and its pruning mask, decoded from the task (once per message)."""
        cached = self._model
        if cached is not None and cached[0] is task.model:
            return cached[1], cached[2]
        params, mask = decode_model(
            task.model, self.trainer.spec.size, self.algorithm.compression.download
        )
        params.flags.writeable = False
        self._model = (task.model, params, mask)
        return params, mask

    def total_steps(self, num_train: int) -> int:
        """A client's full local work in a round, in minibatch steps, for ``num_train`` rows."""
        config = self.algorithm.local
        if config.dp is not None:  # DP-SGD's rule: expected batches per epoch
            return config.epochs * steps_per_epoch(num_train, config.batch_size)
        return local_steps(num_train, config.batch_size, config.epochs)

    # -- one client's round ---------------------------------------------------------------
    def _try_prepare(
        self, task: ClientTask, cid: str, variant: str | None, results: dict[str, ClientOutcome]
    ) -> _Round | None:
        try:
            run = self._prepare(task, cid, variant)
        except Exception as exc:  # a client's failure must never stop the round
            results[cid] = failure_of(cid, exc)
            return None
        if isinstance(run, ClientFailure):
            results[cid] = run
            return None
        return run

    def _prepare(self, task: ClientTask, cid: str, variant: str | None) -> _Round | ClientFailure:
        """Everything before local training; a straggler the server will not wait for fails."""
        t0 = time.perf_counter()
        algorithm = self.algorithm
        rng = round_rng(task.seed, task.round, CLIENT_RNG, task.attempt, client_key(cid))
        ds = self.data.load(cid)
        if ds.num_train == 0:
            raise ValueError(f"client {cid!r} has no training examples")
        config = algorithm.local
        total = self.total_steps(ds.num_train)
        work = task.instructions_for(cid)
        steps = work.steps(total)
        if steps < total:
            if steps == 0 or work.drop_partial:
                return ClientFailure(
                    cid,
                    FailureReason.STRAGGLER,
                    f"{STRAGGLER}: {steps} of its {total} local steps done by the deadline",
                )
            config = replace(config, max_steps=steps)
        global_params, mask = self.model(task)
        trains, encode_rng = trainable(mask, algorithm.compression.upload, global_params.size, rng)
        local_step = algorithm.local_step
        if trains is not None:  # pruned (or, structured, unsent) weights do not train
            masked = mask_gradients(trains)
            local_step = masked if local_step is None else chain(local_step, masked)
        plugins = self._plugins(variant)
        committed = self._load(task, cid, plugins, global_params.size)
        states = dict(committed)
        ctx = RoundContext(
            client_id=cid,
            task=task,
            trainer=self.trainer,
            dataset=ds,
            rng=rng,
            encode_rng=encode_rng,
            config=config,
            global_params=global_params,
            total_steps=total,
            local_step=local_step,
            trainable=trains,
            kept_local=self._kept_local,
            sent=upload_mask(mask, self._kept_local),
        )
        for plugin in plugins:
            if plugin.before_fit is not None:
                ctx, states[plugin.name] = plugin.before_fit(ctx, states.get(plugin.name))
        return _Round(ctx, plugins, states, committed, t0)

    def _finish(self, run: _Round, fit: FitResult) -> ClientReply:
        """Everything after local training: the encoded update; what the client keeps is saved."""
        ctx, plugins, states = run.ctx, run.plugins, run.states
        global_params = ctx.global_params
        local = np.asarray(fit.params)
        if local.shape != global_params.shape:
            raise ValueError(
                f"local training returned parameters of shape {local.shape}, "
                f"expected {global_params.shape}"
            )
        ctx = ctx.evolve(fit=fit, upload=local)
        ctx = _hooks(plugins, "after_fit", ctx, states)
        # into an array last round's delta used, once nothing holds it (no page faults)
        delta = np.subtract(
            np.asarray(ctx.upload, dtype=np.float32),
            global_params,
            out=_DELTAS.empty(global_params.size, np.float32),
        )
        ctx = ctx.evolve(delta=delta)
        ctx = _hooks(plugins, "on_delta", ctx, states)
        assert ctx.delta is not None
        upload = self.algorithm.upload
        delta, _ = upload.update(
            ctx.delta, upload.init(global_params), params=global_params, rng=ctx.rng
        )
        if not np.isfinite(delta).all():  # diverged: nothing worth sending or remembering
            bad = int((~np.isfinite(delta)).sum())
            raise ValueError(
                f"local training diverged: {bad} non-finite values (NaN/Inf) in the update"
            )
        ctx = _hooks(plugins, "before_encode", ctx.evolve(delta=delta), states)
        assert ctx.delta is not None
        secure = ctx.task.stage is SecureStage.MASKED_INPUT
        payload: bytes | memoryview = b""  # a secure update is sealed once plugins are done
        if not secure:
            payload, _ = encode_delta(
                ctx.delta, ctx.sent, self.algorithm.compression.upload, ctx.encode_rng
            )
        examples = float(fit.num_examples if ctx.claimed is None else ctx.claimed)
        metrics = {
            "train_loss": float(fit.loss),
            "num_examples": examples,
            "steps": float(fit.steps),
            "duration_s": time.perf_counter() - run.t0,
        }
        if ctx.config.max_steps is not None:  # a straggler's partial work
            metrics["work_fraction"] = fit.steps / ctx.total_steps
        if fit.privacy is not None:  # DP-SGD facts, for the server's privacy ledger
            metrics.update({f"dp_{k}": float(v) for k, v in fit.privacy.items()})
        ctx = ctx.evolve(
            payloads={DELTA: payload, **ctx.payloads}, weight=examples, metrics=metrics
        )
        ctx = _hooks(plugins, "finish", ctx, states)
        self._save(ctx.task, ctx.client_id, plugins, run.committed, states)
        if secure:
            from fedlake.client.secure import seal_reply

            assert ctx.delta is not None
            return seal_reply(
                self.store, ctx.task, ctx.client_id, ctx.delta, ctx.sent,
                examples=ctx.weight, metrics=ctx.metrics,
            )  # fmt: skip
        return ClientReply(ctx.client_id, ctx.payloads, ctx.weight, ctx.metrics)

    def _alone(self, run: _Round) -> ClientOutcome:
        """Train and finish one prepared client."""
        ctx = run.ctx
        try:
            fit = self.trainer.fit(
                ctx.start_params,
                ctx.dataset.x_train,
                ctx.dataset.y_train,
                config=ctx.config,
                rng=ctx.rng,
                grad_transform=corrected(ctx.local_step, ctx.correction),
            )
            return self._finish(run, fit)
        except Exception as exc:
            return failure_of(ctx.client_id, exc)

    def _answer_stage(self, task: ClientTask, client_id: str) -> ClientOutcome:
        """A secure stage's message (``fedlake.client.secure``), or the typed failure."""
        from fedlake.client.secure import answer_stage

        try:
            return answer_stage(self.store, task, client_id)
        except Exception as exc:  # a client's failure is a dropout of the protocol
            return failure_of(client_id, exc)

    # -- state ----------------------------------------------------------------------------
    def _plugins(self, variant: str | None) -> tuple[ClientPlugin, ...]:
        own = self.algorithm.client_plugins
        if variant is None:
            return own
        try:
            return (*self.variants[variant], *own)
        except KeyError:
            raise ValueError(
                f"unknown client variant {variant!r}; this runtime runs: "
                f"{', '.join(sorted(self.variants)) or 'none'}"
            ) from None

    def _load(
        self, task: ClientTask, cid: str, plugins: tuple[ClientPlugin, ...], dim: int
    ) -> dict[str, Any]:
        """The client's plugin states this round starts from (see ``client/records.py``)."""
        if not plugins:
            return {}
        return committed_states(self.store.load(cid), plugins, task.acks.get(cid), dim)

    def _save(
        self,
        task: ClientTask,
        cid: str,
        plugins: tuple[ClientPlugin, ...],
        committed: dict[str, Any],
        states: dict[str, Any],
    ) -> None:
        """Keep the plugins' new states in the client's store."""
        if not plugins:
            return
        old = self.store.load(cid)
        # a secure attempt's session lives in the same record until its unmasking stage
        session = {} if old is None or SECAGG_KEY not in old else {SECAGG_KEY: old[SECAGG_KEY]}
        record = next_record(plugins, committed, states, task.tag)
        if record is not None:
            self.store.save(cid, {**record, **session})
        elif old is not None:
            self.store.save(cid, {"states": {}, **session})

    def _vectorisable(self, runs: Sequence[_Round]) -> bool:
        """Whether these clients can train as one cohort (same start, same stacked step)."""
        if len(runs) < 2:
            return False
        first = runs[0].ctx
        if first.config.dp is not None:
            return False
        if first.local_step is not None and not first.local_step.stacked:
            return False
        mask = self._model[2] if self._model is not None else None
        # per-client random masks (structured uploads) or starts (FedPer) differ: one by one
        return all(r.ctx.trainable is mask and r.ctx.start is None for r in runs)


def _key_exchange(task: ClientTask) -> bool:
    """Whether ``task`` is a secure-aggregation stage without training."""
    stage = task.stage
    return stage is not None and stage is not SecureStage.MASKED_INPUT


def _hooks(
    plugins: tuple[ClientPlugin, ...], hook: str, ctx: RoundContext, states: dict[str, Any]
) -> RoundContext:
    """Run every plugin's ``hook`` in order, updating ``states`` in place."""
    for plugin in plugins:
        fn = getattr(plugin, hook)
        if fn is not None:
            ctx, states[plugin.name] = fn(ctx, states.get(plugin.name))
    return ctx


def _stacked_step(runs: Sequence[_Round], base: Transform | None) -> Transform | None:
    """The cohort's local step on stacked params: SCAFFOLD corrections row by row, then ``base``."""
    if runs[0].ctx.correction is None:
        return base
    return corrected(base, np.stack([r.ctx.correction for r in runs]))  # type: ignore[misc]
