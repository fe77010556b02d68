"""The federation's lifecycle: rounds until a stop condition, retries, records, resume.

A round: check the privacy budget, encode the model once, then per attempt draw a
cohort, send it the task (``round.run_attempt``), and retry with a fresh cohort while
too few valid updates came back; step the server state, evaluate, record, checkpoint.
The server never holds a client's state: executors and their clients do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedlake.client.masks import upload_mask
from fedlake.core.algorithm import Algorithm
from fedlake.core.params import frozen
from fedlake.core.state import ServerState, apply_server_step, init_server_state, task_extras
from fedlake.core.trainer import Trainer
from fedlake.orchestration.checkpoint import (
    Checkpoint,
    catch_up_history,
    commit,
    load_checkpoint,
    open_sinks,
)
from fedlake.orchestration.events import NullObserver, RunObserver
from fedlake.orchestration.interfaces import Evaluator, Executor, Snapshotable
from fedlake.orchestration.outcome import RunResult, keep_best, result_of, still_stopped
from fedlake.orchestration.privacy import (
    BUDGET_REASON,
    budget_message,
    budget_refusals,
    check_first_round,
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
from fedlake.orchestration.round import AttemptResult, make_task, run_attempt
from fedlake.orchestration.sampling import CohortSpec, draw_cohort
from fedlake.orchestration.screening import problems
from fedlake.orchestration.sinks import METRICS_KEY, RunSinks
from fedlake.orchestration.transport import Download, prepare_download
from fedlake.privacy.plan import PrivacyPlan


class CohortTooSmallError(ValueError):
    """The cohort is smaller than the aggregation rule needs (e.g. Krum's 2f + 3)."""


@dataclass
class Federation:
    """Runs federated training rounds until a target accuracy or a round limit.

    Args:
        algorithm: what clients and server compute (the server uses its aggregator,
            server optimiser, server plugins and codecs).
        trainer: the model (its initial params and layout).
        client_ids: the population the rounds sample from.
        executor: where the clients run.
        evaluator: evaluates the global model after each round (None: not evaluated).
        snapshots: components saved with every checkpoint and restored on resume (the
            simulator's client stores).
        report_stragglers: add straggler counts to every round's metrics.
    """

    algorithm: Algorithm
    trainer: Trainer
    client_ids: Sequence[str]
    executor: Executor
    run_dir: Path
    rounds: int
    cohort: CohortSpec
    seed: int = 0
    min_clients: int = 1
    max_retries: int = 2
    target_accuracy: float | None = None
    evaluator: Evaluator | None = None
    sinks: RunSinks | None = None
    observer: RunObserver = field(default_factory=NullObserver)
    model_config: dict[str, Any] = field(default_factory=dict)
    run_params: dict[str, Any] = field(default_factory=dict)
    privacy: PrivacyPlan | None = None
    snapshots: Sequence[Snapshotable] = ()
    report_stragglers: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        self.cohort_size = self.cohort.size(len(self.client_ids))
        if not 1 <= self.min_clients <= self.cohort_size:
            raise ValueError(
                f"min_clients must be in [1, {self.cohort_size}] (the cohort size), "
                f"got {self.min_clients}"
            )
        agg = self.algorithm.aggregator
        if self.cohort_size < agg.min_updates:
            raise CohortTooSmallError(
                f"aggregator {agg.name} needs at least {agg.min_updates} updates per round, "
                f"but rounds sample {self.cohort_size} clients; sample more clients per "
                "round or tolerate fewer Byzantine clients (a smaller f)"
            )
        # a round needs enough valid updates for the user and for the aggregation rule
        self.min_updates = max(self.min_clients, agg.min_updates)
        if self.privacy is not None and self.privacy.poisson_clients:
            # every Poisson round is released (noise alone when nobody answers): a retry
            # would make the sample one the accountant does not assume
            self.min_updates = 0
        # unknown personal layers fail here, not in a client
        self.kept_local = self.algorithm.kept_local(self.trainer.spec)
        if self.privacy is not None:
            check_first_round(self.privacy)

    # -- public ---------------------------------------------------------------------------
    def run(self, *, resume: bool = False, stop_after: int | None = None) -> RunResult:
        """Run (or resume) to the end; ``stop_after`` ends this call after that many rounds."""
        ckpt = load_checkpoint(self.run_dir) if resume else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"nothing to resume: no checkpoint in {self.run_dir}")
        if ckpt is None:
            params = self.trainer.init_params(self.seed)
            state = init_server_state(self.algorithm, params, seed=self.seed)
            ckpt = Checkpoint(state=state, history=[], run_id=uuid.uuid4().hex[:12])
        self._restore(ckpt)
        sinks = open_sinks(self.sinks, ckpt, self.run_dir.name, self.run_params, resume=resume)
        self.observer.run_started(
            total_rounds=self.rounds, start_round=ckpt.state.round, resumed=resume
        )
        if ckpt.finished:
            if still_stopped(ckpt, self.rounds, self.target_accuracy):
                self.observer.message(f"run already finished: {ckpt.stop_reason}")
                return result_of(ckpt)
            self.observer.message(
                f"continuing a run that stopped ({ckpt.stop_reason}) after "
                f"{ckpt.state.round} rounds"
            )
            ckpt.finished, ckpt.stop_reason = False, None
        if self.evaluator is not None:
            note = self.evaluator.prepare()
            if note is not None:
                self.observer.message(note)
        done_here = 0
        try:
            while ckpt.state.round < self.rounds:
                if stop_after is not None and done_here >= stop_after:
                    return result_of(ckpt, "paused")
                reason = self._one_round(ckpt, sinks)
                done_here += 1
                if reason is not None:
                    self._finish(ckpt, sinks, reason)
                    return result_of(ckpt)
            self._finish(ckpt, sinks, "max_rounds")
            return result_of(ckpt)
        finally:
            catch_up_history(ckpt, self.run_dir)  # however the call ends, the JSON is current
            self.executor.close()

    # -- one round ------------------------------------------------------------------------
    def _one_round(self, ckpt: Checkpoint, sinks: RunSinks) -> str | None:
        state = ckpt.state
        r = state.round
        if self.privacy is not None:
            over = self.privacy.over_budget(self.privacy.projected(state.privacy_ledger, r + 1))
            if over is not None:
                self.observer.message(budget_message(self.privacy, over, r + 1))
                return BUDGET_REASON
        state, download = prepare_download(self.algorithm.compression, state, self.seed)
        ctx = _RoundScope(r, download, task_extras(self.algorithm, state))
        for attempt in range(self.max_retries + 1):
            done = self._attempt(ckpt, state, ctx, attempt)
            if done is not None:
                return self._complete(ckpt, state, ctx, done, sinks)
        # DP-SGD clients refuse rounds past their own budget: that is why it stopped
        assert ctx.last is not None
        reason = BUDGET_REASON if budget_refusals(ctx.last.failures) else "insufficient_updates"
        if self.privacy is not None and self.privacy.per_client:  # sent, so charged
            state, _ = record_round(self.privacy, state, r + 1, ctx.reached, ctx.facts)
        ctx.pending["audit"] = [
            sinks.audit_row("run.stop", self.run_dir.name, {"round": r + 1, "reason": reason})
        ]
        self._commit(ckpt, state, ctx.pending, sinks)
        return reason

    def _attempt(
        self, ckpt: Checkpoint, state: ServerState, ctx: _RoundScope, attempt: int
    ) -> _Attempt | None:
        """One attempt of the round; the attempt when it has enough valid updates, else None."""
        t0 = time.perf_counter()
        r, privacy = ctx.round, self.privacy
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
        task = make_task(
            round_=r, attempt=attempt, seed=self.seed, download=ctx.download,
            extras=ctx.extras, cohort=cohort, acks=ckpt.acks,
        )  # fmt: skip
        res = ctx.last = run_attempt(
            algorithm=self.algorithm, executor=self.executor, state=state, task=task,
            cohort=cohort, sent=ctx.sent(self.kept_local), observer=self.observer,
            facts=ctx.facts,
        )  # fmt: skip
        if privacy is not None:
            scrub(res.records)
            ctx.reached.append(
                [rec.client_id for rec in res.records if rec.status in ("accepted", "rejected")]
            )
        used = res.count >= self.min_updates and res.aggregated is not None
        if used and self.algorithm.needs_acks:  # their kept state now counts on the clients
            for cid in res.accepted():
                ckpt.acks[cid] = (r, attempt)
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

    def _complete(
        self,
        ckpt: Checkpoint,
        state: ServerState,
        ctx: _RoundScope,
        done: _Attempt,
        sinks: RunSinks,
    ) -> str | None:
        """Step the server state with the round's aggregate, evaluate, record, checkpoint."""
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
        self._commit(ckpt, new_state, pending, sinks)
        self.observer.round_finished(record)
        target, accuracy = self.target_accuracy, ev["accuracy"]
        if target is not None and accuracy is not None and accuracy >= target:
            return "target_reached"
        return None

    def _evaluate(self, state: ServerState, server_metrics: dict[str, float]) -> dict[str, Any]:
        """The global model's evaluation after a round (its extra metrics join the round's)."""
        if self.evaluator is None:
            return {"loss": None, "accuracy": None, "examples": None}
        ev, more = self.evaluator.evaluate(state.params, state.round - 1)
        server_metrics.update(more)
        return ev

    # -- bookkeeping ----------------------------------------------------------------------
    def _commit(
        self,
        ckpt: Checkpoint,
        state: ServerState,
        pending: dict[str, list[dict[str, Any]]],
        sinks: RunSinks,
    ) -> None:
        ckpt.components = {s.name: s.snapshot() for s in self.snapshots}
        commit(ckpt, state, pending, sinks, self.run_dir)

    def _restore(self, ckpt: Checkpoint) -> None:
        """Bring the snapshotted components back to the checkpoint's round."""
        for component in self.snapshots:
            data = ckpt.components.get(component.name)
            if data is not None:
                component.restore(data)
            elif ckpt.legacy_client_states is not None:
                adopt = getattr(component, "adopt_legacy", None)
                if adopt is not None:  # a format-2 checkpoint's client states
                    adopt(ckpt.legacy_client_states)

    def _finish(self, ckpt: Checkpoint, sinks: RunSinks, reason: str) -> None:
        ckpt.finished, ckpt.stop_reason = True, reason
        audit = sinks.audit_row(
            "run.finish",
            self.run_dir.name,
            {
                "reason": reason,
                "rounds": ckpt.state.round,
                "best_round": ckpt.best_round,
                "best_accuracy": ckpt.best_accuracy,
            },
        )
        self._commit(ckpt, ckpt.state, {"audit": [audit]}, sinks)
        self.observer.message(f"stopped: {reason} after {ckpt.state.round} rounds")


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
