"""How a run ended, and whether a finished run's stop condition still holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlake.core.state import ServerState
from fedlake.orchestration.checkpoint import Checkpoint


@dataclass
class RunResult:
    """How a run ended."""

    run_id: str
    state: ServerState
    history: list[dict[str, Any]]
    stop_reason: str
    best_round: int | None
    best_accuracy: float | None
    best_params: np.ndarray | None
    tracker_run_id: str | None


def result_of(ckpt: Checkpoint, reason: str | None = None) -> RunResult:
    """The run's result from its checkpoint (``reason`` overrides the recorded stop)."""
    return RunResult(
        run_id=ckpt.run_id,
        state=ckpt.state,
        history=list(ckpt.history),
        stop_reason=reason or ckpt.stop_reason or "unknown",
        best_round=ckpt.best_round,
        best_accuracy=ckpt.best_accuracy,
        best_params=ckpt.best_params,
        tracker_run_id=ckpt.tracker_run_id,
    )


def still_stopped(ckpt: Checkpoint, rounds: int, target_accuracy: float | None) -> bool:
    """Whether a finished run's stop condition holds under these limits.

    A resumed run goes on when the round limit was raised, the target accuracy was
    raised or removed, or it had stopped for too few updates (a resume is a new try).
    """
    if ckpt.state.round >= rounds:
        return True
    if ckpt.stop_reason == "target_reached":
        last = ckpt.history[-1]["eval_accuracy"] if ckpt.history else None
        return target_accuracy is not None and last is not None and last >= target_accuracy
    return False


def keep_best(ckpt: Checkpoint, round_: int, params: np.ndarray, ev: dict[str, float]) -> None:
    """Remember ``params`` as the run's best model when it scores above the best so far."""
    score = model_score(ev["accuracy"], ev["loss"])
    if (
        ckpt.best_accuracy is None
        or ckpt.best_loss is None
        or score > model_score(ckpt.best_accuracy, ckpt.best_loss)
    ):
        ckpt.best_accuracy, ckpt.best_loss = ev["accuracy"], ev["loss"]
        ckpt.best_round, ckpt.best_params = round_, params


def model_score(accuracy: float, loss: float) -> tuple[float, float]:
    """Ranking key of a global model: higher accuracy first, then lower loss.

    Accuracy on a small test set ties often (a plateau); the loss then picks the
    better-fitted model, so the champion is not simply the first round to reach it.
    """
    return (float(accuracy), -float(loss))
