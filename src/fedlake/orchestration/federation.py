"""The round loop: sample, ship, train, screen, aggregate, evaluate, record, checkpoint."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedlake.attacks.adversary import Adversary
from fedlake.backends.base import Executor
from fedlake.backends.inline import InlineExecutor
from fedlake.client.local import ClientJob, ClientTask, upload_mask
from fedlake.client.trainer import Trainer
from fedlake.compression.messages import decode_update
from fedlake.core.algorithm import Algorithm
from fedlake.core.params import frozen
from fedlake.core.personal import personal_upload_mask
from fedlake.core.state import (
    ServerState,
    TooFewUpdatesError,
    aggregate_updates,
    apply_server_step,
    init_server_state,
    round_rng,
)
from fedlake.core.update import CONTROL
from fedlake.data.base import ClientData
from fedlake.orchestration.checkpoint import (
    Checkpoint,
    catch_up_history,
    commit,
    load_checkpoint,
    open_sinks,
)
from fedlake.orchestration.draw import draw_attempt
from fedlake.orchestration.evaluation import EvalSet
from fedlake.orchestration.events import NullObserver, RunObserver
from fedlake.orchestration.outcome import RunResult, keep_best, result_of, still_stopped
from fedlake.orchestration.privacy import (
    BUDGET_REASON,
    budget_message,
    budget_refusals,
    check_first_round,
    dp_facts,
    record_round,
    scrub,
    spend_columns,
)
from fedlake.orchestration.records import (
    dropped_rows,
    model_row,
    partial_work,
    retry_message,
    round_row,
    straggler_counts,
    unavailable,
)
from fedlake.orchestration.sampling import CohortSpec, Population, sample_cohort
from fedlake.orchestration.screening import client_results, problems, screen
from fedlake.orchestration.sinks import METRICS_KEY, RunSinks
from fedlake.orchestration.transport import (
    accepted_ids,
    keep_client_states,
    keep_controls,
    prepare_download,
)
from fedlake.personal.evaluate import evaluate_personal
from fedlake.privacy.plan import PrivacyPlan

EVAL_RNG = 5  # purpose tag of the evaluation sample's generator (see draw.py for the others)
# Without an explicit eval_clients, larger populations are evaluated on a fixed sample of
# this many clients: every user's test split each round would not scale to millions.
DEFAULT_EVAL_CLIENTS = 1000


class CohortTooSmallError(ValueError):
    """The cohort is smaller than the aggregation rule needs (e.g. Krum's 2f + 3)."""


@dataclass
class Federation:
    """Runs federated training rounds until a target accuracy or a round limit.

    ``make_algorithm`` is a picklable zero-argument recipe factory so that the
    process executor can rebuild the algorithm in its workers. ``adversary`` makes a
    share of every cohort malicious (attack simulations).
    """

    make_algorithm: Callable[[], Algorithm]
    trainer: Trainer
    data: ClientData
    run_dir: Path
    rounds: int
    cohort: CohortSpec
    seed: int = 0
    min_clients: int = 1
    max_retries: int = 2
    target_accuracy: float | None = None
    population: Population = field(default_factory=Population)
    eval_clients: int | None = None
    executor: Executor = field(default_factory=InlineExecutor)
    sinks: RunSinks | None = None
    observer: RunObserver = field(default_factory=NullObserver)
    model_config: dict[str, Any] = field(default_factory=dict)
    run_params: dict[str, Any] = field(default_factory=dict)
    adversary: Adversary | None = None
    privacy: PrivacyPlan | None = None

    def __post_init__(self) -> None:
        self.algorithm = self.make_algorithm()
        self.client_ids: Sequence[str] = self.data.client_ids()
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
        self.personal_mask = personal_upload_mask(self.algorithm, self.trainer.spec)
        attack = self.adversary.attack if self.adversary is not None else None
        self.job = ClientJob(self.data, self.trainer, self.make_algorithm, attack=attack)
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
        eval_set = self.eval_set()
        done_here = 0
        try:
            while ckpt.state.round < self.rounds:
                if stop_after is not None and done_here >= stop_after:
                    return result_of(ckpt, "paused")
                reason = self._one_round(ckpt, eval_set, sinks)
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
    def _one_round(self, ckpt: Checkpoint, eval_set: EvalSet, sinks: RunSinks) -> str | None:
        state = ckpt.state
        r = state.round
        pending: dict[str, list[dict[str, Any]]] = {"rounds": [], "client_updates": []}
        if self.privacy is not None:
            over = self.privacy.over_budget(self.privacy.projected(state.privacy_ledger, r + 1))
            if over is not None:
                self.observer.message(budget_message(self.privacy, over, r + 1))
                return BUDGET_REASON
        state, download = prepare_download(self.algorithm.compression, state, self.seed)
        facts: dict[str, dict[str, float]] = {}
        reached: list[list[str]] = []  # per attempt: whose (noised) update the server got
        for attempt in range(self.max_retries + 1):
            t0 = time.perf_counter()
            drawn = draw_attempt(
                self.client_ids,
                size=self.cohort_size,
                seed=self.seed,
                round_=r,
                attempt=attempt,
                population=self.population,
                epochs=self.algorithm.local.epochs,
                privacy=self.privacy,
                adversary=self.adversary,
            )
            cohort, dropped, active = drawn.cohort, drawn.dropped, drawn.active
            malicious = drawn.malicious
            self.observer.round_started(round=r + 1, attempt=attempt, cohort_size=len(cohort))
            rows = dropped_rows(cohort, dropped)
            done = [len(rows)]

            def tick(done: list[int] = done, total: int = len(cohort), r: int = r) -> None:
                done[0] += 1
                self.observer.client_finished(round=r + 1, done=done[0], total=total)

            states: dict[str, Any] = {}
            task = ClientTask(
                round=r,
                attempt=attempt,
                params=download.received,
                seed=self.seed,
                mask=download.mask,
                states={c: ckpt.client_states[c] for c in active if c in ckpt.client_states},
                malicious=malicious,
                work=drawn.work,
                control=state.control,
            )
            sent = upload_mask(download.mask, self.personal_mask)  # what uploads carry
            decode = functools.partial(
                decode_update, dim=state.dim, mask=sent, codec=self.algorithm.compression.upload
            )
            results = client_results(
                self.executor,
                self.job,
                task,
                active,
                adversary=self.adversary,
                decode=decode,
                mask=sent,
            )
            partial: list[str] = []  # clients whose accepted update is partial work
            accepted = partial_work(
                dp_facts(
                    screen(
                        keep_client_states(results, states),
                        state.dim,
                        rows,
                        on_result=tick,
                        decode=decode,
                        required=(CONTROL,) if self.algorithm.scaffold else (),
                    ),
                    facts,
                ),
                partial,
            )
            try:
                delta, agg_state, count, _, control_mean = aggregate_updates(
                    self.algorithm, state, accepted
                )
            except TooFewUpdatesError:  # none, or fewer than the rule needs: retry
                delta, agg_state, control_mean = None, None, None
                count = sum(row["status"] == "accepted" for row in rows)
            if self.privacy is not None:
                scrub(rows)
                reached.append(
                    [row["client_id"] for row in rows if row["status"] in ("accepted", "rejected")]
                )
            # what the clients keep (error-feedback residuals) is theirs whatever the server
            # made of their updates; a retry's new cohort sees it (saved with the round).
            # SCAFFOLD's c_i counts only if the server adds its Delta c_i to c this attempt.
            if self.algorithm.scaffold:
                used = count >= self.min_updates and delta is not None
                keep_controls(states, ckpt.client_states, accepted_ids(rows) if used else set())
            ckpt.client_states.update(states)
            control_bytes = 0 if state.control is None else state.control.nbytes
            base = round_row(
                r,
                attempt,
                cohort,
                rows,
                time.perf_counter() - t0,
                download,
                extra_down=control_bytes,
            )
            # rounds.metrics JSON, history and MLflow get these too
            counts: dict[str, int] = {}  # simulated attackers and stragglers
            if self.adversary is not None:
                counts["num_malicious"] = len(malicious)
            if self.population.heterogeneous:  # partial work kept, and stragglers dropped
                counts.update(straggler_counts(rows, partial))
            trouble = problems(rows)
            if trouble is not None:
                self.observer.message(f"round {r + 1}: {trouble}")
            down = (
                len(download.payload) + control_bytes
            )  # SCAFFOLD's control travels with the model
            pending["client_updates"].extend(
                {
                    "round": r + 1,
                    "attempt": attempt,
                    "bytes_down": 0 if unavailable(row) else down,
                    **row,
                }
                for row in rows
            )
            if count >= self.min_updates and delta is not None:
                break
            base["status"] = "retry" if attempt < self.max_retries else "failed"
            pending["rounds"].append(base)
            ckpt.history.append(base)  # its traffic and time count too
            self.observer.message(
                retry_message(
                    r,
                    attempt,
                    count,
                    self.min_clients,
                    self.algorithm.aggregator,
                    last=attempt == self.max_retries,
                )
            )
        else:
            # DP-SGD clients refuse rounds past their own budget: that is why it stopped
            reason = BUDGET_REASON if budget_refusals(rows) else "insufficient_updates"
            if self.privacy is not None and self.privacy.per_client:  # sent, so charged
                state, _ = record_round(self.privacy, state, r + 1, reached, facts)
            pending["audit"] = [
                sinks.audit_row("run.stop", self.run_dir.name, {"round": r + 1, "reason": reason})
            ]
            commit(ckpt, state, pending, sinks, self.run_dir)
            return reason

        new_state, server_metrics = apply_server_step(
            self.algorithm,
            state,
            delta,
            agg_state,
            control_mean=control_mean,
            participation=count / len(self.client_ids),
        )
        if hasattr(agg_state, "metrics"):  # e.g. DP-FedAvg's adaptive clip norm
            server_metrics.update(agg_state.metrics())
        if self.privacy is not None:
            new_state, spent = record_round(self.privacy, new_state, r + 1, reached, facts)
            base.update(spend_columns(spent))
            server_metrics["noise_multiplier"] = self.privacy.noise_multiplier
        if download.mask is not None:  # pruned stays pruned, whatever the server optimiser does
            new_state = replace(new_state, params=frozen(new_state.params * download.mask))
        ev = eval_set.evaluate(self.trainer, new_state.params)
        if self.algorithm.personal is not None:  # each client's own model on its own test split
            server_metrics.update(self._personal_eval(new_state, eval_set, ckpt.client_states))
        base.update(
            status="completed",
            eval_loss=ev["loss"],
            eval_accuracy=ev["accuracy"],
            duration_s=time.perf_counter() - t0,
            metrics=json.dumps({**server_metrics, "eval_examples": ev["examples"], **counts}),
        )
        pending["rounds"].append(base)
        pending["models"] = [
            model_row(r, new_state.params, self.trainer.spec, self.model_config, ev)
        ]
        keep_best(ckpt, r + 1, new_state.params, ev)
        record = {**base, **server_metrics, **counts}
        ckpt.history.append(record)
        for key in ("bytes_up", "bytes_down"):  # the run so far, retried attempts included
            record[f"total_{key}"] = int(sum(h[key] for h in ckpt.history))
        pending[METRICS_KEY] = [
            {"step": r + 1, **{k: v for k, v in record.items() if isinstance(v, int | float)}}
        ]
        commit(ckpt, new_state, pending, sinks, self.run_dir)
        self.observer.round_finished(record)
        if self.target_accuracy is not None and ev["accuracy"] >= self.target_accuracy:
            return "target_reached"
        return None

    def _personal_eval(
        self, state: ServerState, eval_set: EvalSet, client_states: dict[str, Any]
    ) -> dict[str, float]:
        assert self.algorithm.personal is not None
        return evaluate_personal(
            self.algorithm.personal,
            trainer=self.trainer,
            data=self.data,
            client_ids=eval_set.clients,
            global_params=state.params,
            client_states=client_states,
            config=self.algorithm.local,
            seed=self.seed,
            round_=state.round - 1,
            mask=self.personal_mask,
        )

    # -- bookkeeping ----------------------------------------------------------------------
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
        commit(ckpt, ckpt.state, {"audit": [audit]}, sinks, self.run_dir)
        self.observer.message(f"stopped: {reason} after {ckpt.state.round} rounds")

    def eval_set(self) -> EvalSet:
        """The evaluation clients' test splits (a fixed sample for large populations)."""
        ids = self.client_ids
        size = self.eval_clients
        if size is None and len(ids) > DEFAULT_EVAL_CLIENTS:
            size = DEFAULT_EVAL_CLIENTS
            self.observer.message(
                f"evaluating on the test splits of {size:,} of {len(ids):,} clients, the same "
                "every round (set federation.eval_clients to choose how many)"
            )
        if size is not None and size < len(ids):
            ids = sample_cohort(ids, size, round_rng(self.seed, 0, EVAL_RNG))
        return EvalSet.build(self.data, ids)
