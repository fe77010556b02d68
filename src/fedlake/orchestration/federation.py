"""The federation's lifecycle: rounds until a stop condition, resume, checkpoints.

What a round does is ``round.RoundPlayer``'s; the Federation starts or resumes the run,
plays rounds until the round limit, the target accuracy or a round's own stop (the
privacy budget, too few valid updates), and checkpoints with the components that must
resume with it. The server never holds a client's state: executors and their clients do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedlake.core.algorithm import Algorithm
from fedlake.core.state import ServerState, init_server_state
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
from fedlake.orchestration.memory import available_bytes, round_memory
from fedlake.orchestration.outcome import RunResult, result_of, still_stopped
from fedlake.orchestration.privacy import (
    check_first_round,
)
from fedlake.orchestration.round import RoundPlayer
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.secure import SecureSettings, check_secure
from fedlake.orchestration.sinks import RunSinks
from fedlake.privacy.plan import PrivacyPlan


class CohortTooSmallError(ValueError):
    """The cohort is smaller than the aggregation rule needs (e.g. Krum's 2f + 3)."""


MEMORY_NOTE_BYTES = 256 * 2**20  # a non-streaming round's memory is said from this size


class RoundMemoryError(ValueError):
    """A round's aggregation would not fit in the server's memory."""


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
        run_id: the id of a fresh run (None: a random one); a resumed run keeps its own.
        audit_feeds: functions giving audit rows to write with each checkpoint (a
            server's joins, submissions and refusals).
        secure: run every attempt with secure aggregation (SecAgg+; None: plain rounds).
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
    run_id: str | None = None
    audit_feeds: Sequence[Callable[[], list[dict[str, Any]]]] = ()
    secure: SecureSettings | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.secure is not None:
            mechanism = self.privacy.mechanism if self.privacy is not None else None
            if mechanism in ("central", "adaptive"):
                raise ValueError(
                    "central DP noises on the server what secure aggregation never shows "
                    "it: use the distributed mechanism (clients noise before masking)"
                )
            if (mechanism == "distributed") != (self.secure.dp is not None):
                raise ValueError(
                    "distributed DP needs both the privacy plan and the secure settings' "
                    "DistributedDP (build them with fedlake.run.build)"
                )
            check_secure(self.algorithm)
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
        self.memory = round_memory(agg, self.cohort_size, self.trainer.spec.size)
        free = available_bytes()
        if not self.memory.streams and free is not None and self.memory.bytes > free:
            raise RoundMemoryError(
                f"a round of {self.cohort_size} clients needs {self.memory.describe()} on the "
                f"server, and {free / 1e9:.2f} GB is available: sample fewer clients per "
                "round, use a linear aggregator (it streams, any cohort), or a bigger driver"
            )
        # a round needs enough valid updates for the user and for the aggregation rule
        min_updates = max(self.min_clients, agg.min_updates)
        if self.privacy is not None and self.privacy.poisson_clients:
            # every Poisson round is released (noise alone when nobody answers): a retry
            # would make the sample one the accountant does not assume
            min_updates = 0
        if self.privacy is not None:
            check_first_round(self.privacy)
        self.min_updates = min_updates
        self.algorithm.kept_local(self.trainer.spec)  # unknown personal layers fail here

    # -- public ---------------------------------------------------------------------------
    def run(self, *, resume: bool = False, stop_after: int | None = None) -> RunResult:
        """Run (or resume) to the end; ``stop_after`` ends this call after that many rounds."""
        ckpt = load_checkpoint(self.run_dir) if resume else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"nothing to resume: no checkpoint in {self.run_dir}")
        if ckpt is None:
            params = self.trainer.init_params(self.seed)
            state = init_server_state(self.algorithm, params, seed=self.seed)
            run_id = self.run_id or uuid.uuid4().hex[:12]
            ckpt = Checkpoint(state=state, history=[], run_id=run_id)
        self._restore(ckpt)
        self.player = player = self._player()  # with the observer and executor as they are now
        sinks = open_sinks(self.sinks, ckpt, self.run_dir.name, self.run_params, resume=resume)
        self.observer.run_started(
            total_rounds=self.rounds, start_round=ckpt.state.round, resumed=resume
        )
        if not self.memory.streams and self.memory.bytes >= MEMORY_NOTE_BYTES:
            self.observer.message(f"each round's aggregation holds {self.memory.describe()}")
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
                reason, accuracy = player.play(ckpt, sinks)
                done_here += 1
                if reason is None and self._reached(accuracy):
                    reason = "target_reached"
                if reason is not None:
                    self._finish(ckpt, sinks, reason)
                    return result_of(ckpt)
            self._finish(ckpt, sinks, "max_rounds")
            return result_of(ckpt)
        finally:
            catch_up_history(ckpt, self.run_dir)  # however the call ends, the JSON is current
            self.executor.close()

    # -- bookkeeping ----------------------------------------------------------------------
    def _player(self) -> RoundPlayer:
        return RoundPlayer(
            algorithm=self.algorithm,
            trainer=self.trainer,
            client_ids=self.client_ids,
            executor=self.executor,
            seed=self.seed,
            cohort_size=self.cohort_size,
            min_clients=self.min_clients,
            min_updates=self.min_updates,
            max_retries=self.max_retries,
            evaluator=self.evaluator,
            observer=self.observer,
            privacy=self.privacy,
            report_stragglers=self.report_stragglers,
            model_config=self.model_config,
            run_name=self.run_dir.name,
            commit=self._commit,
            secure=self.secure,
        )

    def _reached(self, accuracy: float | None) -> bool:
        """Whether a round's accuracy reached the target (never, without either)."""
        target = self.target_accuracy
        return target is not None and accuracy is not None and accuracy >= target

    def _commit(
        self,
        ckpt: Checkpoint,
        state: ServerState,
        pending: dict[str, list[dict[str, Any]]],
        sinks: RunSinks,
    ) -> None:
        ckpt.components = {s.name: s.snapshot() for s in self.snapshots}
        fed = [row for feed in self.audit_feeds for row in feed()]
        if fed:
            pending = {**pending, "audit": [*pending.get("audit", []), *fed]}
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
