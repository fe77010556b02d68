"""One round of the server: privacy budget, download, attempts until enough valid updates,
the server step, evaluation and records.

Per attempt: draw a cohort, send it the task (``attempt.run_attempt``: screening and the
aggregator's fold), and retry with a fresh cohort while too few valid updates came back;
then step the server state with the pure :func:`fedlake.core.state.apply_server_step`,
evaluate, and hand the typed records to the checkpoint and the sinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedlake.client.masks import upload_mask
from fedlake.core.algorithm import Algorithm
from fedlake.core.params import frozen
from fedlake.core.state import ServerState, apply_server_step, task_extras
from fedlake.core.task import ClientTask, Tag
from fedlake.core.trainer import Trainer
from fedlake.orchestration.attempt import AttemptResult, make_task, run_attempt
from fedlake.orchestration.buffered import BufferedExecutor
from fedlake.orchestration.checkpoint import Checkpoint
from fedlake.orchestration.events import RunObserver
from fedlake.orchestration.interfaces import Evaluator, Executor
from fedlake.orchestration.outcome import keep_best
from fedlake.orchestration.privacy import (
    BUDGET_REASON,
    budget_message,
    budget_refusals,
    record_round,
    scrub,
)
from fedlake.orchestration.records import (
    RoundRecord,
    RoundStatus,
    client_rows,
    history_record,
    model_row,
    retry_message,
    round_record,
    straggler_counts,
)
from fedlake.orchestration.sampling import draw_cohort
from fedlake.orchestration.screening import problems
from fedlake.orchestration.secure import SecureSettings, secure_attempt
from fedlake.orchestration.sinks import METRICS_KEY, RunSinks
from fedlake.orchestration.transport import Download, prepare_download
from fedlake.privacy.plan import PrivacyPlan

__all__ = ["Commit", "RoundPlayer"]

Commit = Callable[[Checkpoint, ServerState, dict[str, list[dict[str, Any]]], RunSinks], None]


@dataclass
class RoundPlayer:
    """Plays a federation's rounds (the Federation decides when to stop).

    ``min_updates`` is the valid updates a round needs (the user's ``min_clients`` and the
    aggregation rule's own minimum; 0 for Poisson-sampled DP rounds, which are always
    released); ``commit`` checkpoints a round with its pending rows and writes them.
    """

    algorithm: Algorithm
    trainer: Trainer
    client_ids: Sequence[str]
    executor: Executor
    seed: int
    cohort_size: int
    min_clients: int
    min_updates: int
    max_retries: int
    evaluator: Evaluator | None
    observer: RunObserver
    privacy: PrivacyPlan | None
    report_stragglers: bool
    model_config: dict[str, Any]
    run_name: str
    commit: Commit
    secure: SecureSettings | None = None  # SecAgg+ in every attempt (None: plain rounds)

    def __post_init__(self) -> None:
        self.kept_local = self.algorithm.kept_local(self.trainer.spec)

    def play(self, ckpt: Checkpoint, sinks: RunSinks) -> tuple[str | None, float | None]:
        """Play the next round: ``(why the run stops, or None; the global model's accuracy)``.

        Every attempt, retry and completed round is recorded and checkpointed on the way.
        """
        state = ckpt.state
        r = state.round
        if self.privacy is not None:
            over = self.privacy.over_budget(self.privacy.projected(state.privacy_ledger, r + 1))
            if over is not None:
                self.observer.message(budget_message(self.privacy, over, r + 1))
                return BUDGET_REASON, None
        state, download = prepare_download(self.algorithm.compression, state, self.seed)
        ctx = _RoundScope(r, download, task_extras(self.algorithm, state))
        for attempt in range(self.max_retries + 1):
            done = self._attempt(ckpt, state, ctx, attempt)
            if done is not None:
                return None, self._complete(ckpt, state, ctx, done, sinks)
        # DP-SGD clients refuse rounds past their own budget: that is why it stopped
        assert ctx.last is not None
        reason = BUDGET_REASON if budget_refusals(ctx.last.failures) else "insufficient_updates"
        if self.privacy is not None and self.privacy.per_client:  # sent, so charged
            state, _ = record_round(self.privacy, state, r + 1, ctx.reached, ctx.facts)
        ctx.pending["audit"] = [
            sinks.audit_row("run.stop", self.run_name, {"round": r + 1, "reason": reason})
        ]
        self.commit(ckpt, state, ctx.pending, sinks)
        return reason, None

    def _attempt(
        self, ckpt: Checkpoint, state: ServerState, ctx: _RoundScope, attempt: int
    ) -> _Attempt | None:
        """One attempt of the round; the attempt when it has enough valid updates, else None."""
        t0 = time.perf_counter()
        r, privacy = ctx.round, self.privacy
        cohort, task, tags, scales = self._cohort(ckpt, ctx, attempt)
        if self.secure is not None:  # four stages; the server sees only the sum
            res = ctx.last = secure_attempt(
                algorithm=self.algorithm, executor=self.executor, state=state, task=task,
                cohort=cohort, sent=ctx.sent(self.kept_local), observer=self.observer,
                settings=self.secure, run_id=ckpt.run_id,
            )  # fmt: skip
        else:
            res = ctx.last = run_attempt(
                algorithm=self.algorithm, executor=self.executor, state=state, task=task,
                cohort=cohort, sent=ctx.sent(self.kept_local), observer=self.observer,
                facts=ctx.facts, scales=scales,
            )  # fmt: skip
        if privacy is not None:
            scrub(res.records)
            ctx.reached.append(
                [rec.client_id for rec in res.records if rec.status in ("accepted", "rejected")]
            )
        used = res.count >= self.min_updates and res.aggregated is not None
        if used and self.algorithm.needs_acks:  # their kept state now counts on the clients
            for cid in res.accepted():  # a stale update acknowledges the task it answered
                ckpt.acks[cid] = tags.get(cid, (r, attempt))
        base = round_record(
            r, attempt, cohort, res.records, time.perf_counter() - t0, ctx.download,
            extra_down=ctx.extra_down,
        )  # fmt: skip
        counts: dict[str, int] = dict(res.executor_metrics)  # simulated attackers
        if self.report_stragglers:  # partial work kept, and stragglers dropped
            counts.update(straggler_counts(res.records, res.partial))
        trouble = problems(res.records)
        if trouble is not None:
            self.observer.message(f"round {r + 1}: {trouble}")
        down = len(ctx.download.payload) + ctx.extra_down
        ctx.pending["client_updates"].extend(client_rows(res.records, r, attempt, down))
        if used:
            return _Attempt(res, base, counts, t0)
        last = attempt == self.max_retries
        base.status = RoundStatus.FAILED if last else RoundStatus.RETRY
        ctx.pending["rounds"].append(base.row())
        ckpt.history.append(base.row())  # its traffic and time count too
        self.observer.message(
            retry_message(
                r, attempt, res.count, self.min_clients, self.algorithm.aggregator, last=last
            )
        )
        return None

    def _cohort(
        self, ckpt: Checkpoint, ctx: _RoundScope, attempt: int
    ) -> tuple[list[str], ClientTask, Mapping[str, Tag], dict[str, float]]:
        """The attempt's cohort and task; with FedBuff, the task each update answers and
        the staleness weights of their deltas."""
        r, privacy = ctx.round, self.privacy
        buffered = self.executor if isinstance(self.executor, BufferedExecutor) else None
        if buffered is not None:  # the step's cohort is whoever delivers first, any version
            self.observer.round_started(round=r + 1, attempt=attempt, cohort_size=self.cohort_size)
            task = self._task(ckpt, ctx, attempt, list(ckpt.acks))  # any client may pull it
            cohort = buffered.gather(task, self.cohort_size)
            tags = buffered.pulled()
            weight = buffered.settings.weight
            return cohort, task, tags, {c: weight(r - tags[c][0]) for c in cohort if c in tags}
        cohort = draw_cohort(
            self.client_ids,
            size=self.cohort_size,
            seed=self.seed,
            round_=r,
            attempt=attempt,
            poisson_rate=privacy.rate if privacy is not None and privacy.poisson_clients else None,
            secure=bool(privacy and privacy.secure_noise),
        )
        self.observer.round_started(round=r + 1, attempt=attempt, cohort_size=len(cohort))
        return cohort, self._task(ckpt, ctx, attempt, cohort), {}, {}

    def _task(
        self, ckpt: Checkpoint, ctx: _RoundScope, attempt: int, cohort: Sequence[str]
    ) -> ClientTask:
        """The attempt's task, with ``cohort``'s acknowledgements."""
        return make_task(
            round_=ctx.round, attempt=attempt, seed=self.seed, download=ctx.download,
            extras=ctx.extras, cohort=cohort, acks=ckpt.acks,
        )  # fmt: skip

    def _complete(
        self,
        ckpt: Checkpoint,
        state: ServerState,
        ctx: _RoundScope,
        done: _Attempt,
        sinks: RunSinks,
    ) -> float | None:
        """Step the server state with the round's aggregate, evaluate, record, checkpoint;
        the global model's accuracy."""
        r, res, base = ctx.round, done.result, done.base
        aggregated = res.aggregated
        assert aggregated is not None
        new_state, server_metrics = apply_server_step(
            self.algorithm,
            state,
            aggregated.vectors,
            aggregated.aggregator_state,
            participation=res.count / len(self.client_ids),
        )
        if hasattr(aggregated.aggregator_state, "metrics"):  # DP-FedAvg's adaptive clip norm
            server_metrics.update(aggregated.aggregator_state.metrics())
        if self.privacy is not None:
            new_state, spent = record_round(self.privacy, new_state, r + 1, ctx.reached, ctx.facts)
            base.epsilon, base.delta = spent.epsilon, spent.delta
            server_metrics["noise_multiplier"] = self.privacy.noise_multiplier
        mask = ctx.download.mask
        if mask is not None:  # pruned stays pruned, whatever the server optimiser does
            new_state = replace(new_state, params=frozen(new_state.params * mask))
        ev = self._evaluate(new_state, server_metrics)
        base.status = RoundStatus.COMPLETED
        base.eval_loss, base.eval_accuracy = ev["loss"], ev["accuracy"]
        base.duration_s = time.perf_counter() - done.t0
        base.metrics = {**server_metrics, "eval_examples": ev["examples"], **done.counts}
        row = base.row()
        pending = ctx.pending
        pending["rounds"].append(row)
        pending["models"] = [
            model_row(r, new_state.params, self.trainer.spec, self.model_config, ev)
        ]
        if ev["accuracy"] is not None:
            keep_best(ckpt, r + 1, new_state.params, ev)
        record = history_record(row, server_metrics, done.counts, ckpt.history)
        pending[METRICS_KEY] = [
            {"step": r + 1, **{k: v for k, v in record.items() if isinstance(v, int | float)}}
        ]
        self.commit(ckpt, new_state, pending, sinks)
        self.observer.round_finished(record)
        return ev["accuracy"]

    def _evaluate(self, state: ServerState, server_metrics: dict[str, float]) -> dict[str, Any]:
        """The global model's evaluation after a round (its extra metrics join the round's)."""
        if self.evaluator is None:
            return {"loss": None, "accuracy": None, "examples": None}
        ev, more = self.evaluator.evaluate(state.params, state.round - 1)
        server_metrics.update(more)
        return ev


@dataclass
class _RoundScope:
    """What a round's attempts share: its download, extras, DP facts and pending rows."""

    round: int
    download: Download
    extras: dict[str, bytes]
    facts: dict[str, dict[str, float]] = field(default_factory=dict)
    reached: list[list[str]] = field(default_factory=list)  # per attempt: whose update came
    pending: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"rounds": [], "client_updates": []}
    )
    last: AttemptResult | None = None

    @property
    def extra_down(self) -> int:
        """Bytes each client downloads besides the model (SCAFFOLD's control)."""
        return sum(len(v) for v in self.extras.values())

    def sent(self, kept_local: Any) -> Any:
        """The positions uploads carry: surviving the pruning, and not kept on the clients."""
        return upload_mask(self.download.mask, kept_local)


@dataclass
class _Attempt:
    """An attempt with enough valid updates: its result, rounds row, counts, start time."""

    result: AttemptResult
    base: RoundRecord
    counts: dict[str, int]
    t0: float
