"""Typed records of a round (per client and per round) and the table rows they map to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from fedlake.core.aggregator import Aggregator
from fedlake.core.params import ParamSpec
from fedlake.core.task import FailureReason
from fedlake.orchestration.sinks import now
from fedlake.orchestration.transport import Download


class ClientStatus(StrEnum):
    """What became of one sampled client in an attempt."""

    ACCEPTED = "accepted"  # its update was aggregated (or would have been: too few others)
    REJECTED = "rejected"  # it sent something the server refused (undecodable, invalid)
    FAILED = "failed"  # it sent nothing: a crash, a refusal, a lost worker
    DROPPED = "dropped"  # it sent nothing: unavailable, or a straggler the server left


class RoundStatus(StrEnum):
    """How an attempt of a round ended."""

    COMPLETED = "completed"
    RETRY = "retry"  # too few valid updates; a fresh cohort tries again
    FAILED = "failed"  # too few valid updates, no retry left: the run stops


@dataclass
class ClientRecord:
    """One sampled client's outcome in an attempt (metadata only, never parameters).

    ``failure`` is the typed reason of a client that sent nothing; ``update_norm``,
    ``train_loss`` and ``duration_s`` exist only for clients that replied.
    """

    client_id: str
    status: ClientStatus
    reason: str | None
    num_examples: int = 0
    bytes: int = 0
    failure: FailureReason | None = None
    replied: bool = False
    update_norm: float | None = None
    train_loss: float | None = None
    duration_s: float | None = None

    @property
    def unavailable(self) -> bool:
        """Whether the client never got the model (a dropout, not a straggler)."""
        return self.failure is FailureReason.UNAVAILABLE

    def row(self) -> dict[str, Any]:
        """The client_updates row."""
        out: dict[str, Any] = {
            "client_id": self.client_id,
            "status": self.status.value,
            "reason": self.reason,
            "num_examples": self.num_examples,
        }
        if self.replied:
            out["update_norm"] = self.update_norm
        out["bytes"] = self.bytes
        if self.replied:
            out["train_loss"] = self.train_loss
            out["duration_s"] = self.duration_s
        return out


@dataclass
class RoundRecord:
    """One attempt of a round, as the rounds table and the history keep it.

    ``metrics`` are the round's server metrics, evaluation counts and executor counts
    (JSON in the table); ``epsilon`` and ``delta`` the privacy spent so far (DP runs).
    """

    round: int  # 1-based
    attempt: int
    status: RoundStatus
    cohort: list[str]
    num_sampled: int
    num_completed: int
    num_dropped: int
    num_failed: int
    num_rejected: int
    train_loss: float | None
    bytes_up: int
    bytes_down: int
    upload_ratio: float | None
    download_ratio: float
    duration_s: float
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None
    created_at: datetime = field(default_factory=now)

    def row(self) -> dict[str, Any]:
        """The rounds-table row (and the history's record, before the round's extras)."""
        return {
            "round": self.round,
            "attempt": self.attempt,
            "status": self.status.value,
            "cohort": json.dumps(self.cohort),
            "num_sampled": self.num_sampled,
            "num_completed": self.num_completed,
            "num_dropped": self.num_dropped,
            "num_failed": self.num_failed,
            "num_rejected": self.num_rejected,
            "train_loss": self.train_loss,
            "eval_loss": self.eval_loss,
            "eval_accuracy": self.eval_accuracy,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "upload_ratio": self.upload_ratio,
            "download_ratio": self.download_ratio,
            "duration_s": self.duration_s,
            "metrics": json.dumps(self.metrics),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "created_at": self.created_at,
        }


def round_record(
    r: int,
    attempt: int,
    cohort: list[str],
    records: list[ClientRecord],
    seconds: float,
    download: Download,
    *,
    extra_down: int = 0,
) -> RoundRecord:
    """The record of attempt ``attempt`` of round ``r`` (0-based), before evaluation.

    ``extra_down`` is what each client downloads besides the model (SCAFFOLD's control).
    """
    status = [rec.status for rec in records]
    accepted = [rec for rec in records if rec.status is ClientStatus.ACCEPTED]
    weights = np.array([rec.num_examples for rec in accepted], dtype=float)
    reported = [rec.train_loss for rec in accepted]
    losses = np.array([x or 0.0 for x in reported], dtype=float)
    # under DP per-client losses are not published: no mean of them either
    known = bool(weights.sum()) and any(x is not None for x in reported)
    bytes_up = int(sum(rec.bytes for rec in records))
    senders = sum(1 for rec in records if rec.bytes > 0)
    float32_up = 4 * download.received.size * senders  # what uncompressed FedAvg sends
    sent = len(download.payload) + extra_down
    return RoundRecord(
        round=r + 1,
        attempt=attempt,
        status=RoundStatus.COMPLETED,
        cohort=list(cohort),
        num_sampled=len(cohort),
        num_completed=status.count(ClientStatus.ACCEPTED),
        num_dropped=status.count(ClientStatus.DROPPED),
        num_failed=status.count(ClientStatus.FAILED),
        num_rejected=status.count(ClientStatus.REJECTED),
        train_loss=float(weights @ losses / weights.sum()) if known else None,
        bytes_up=bytes_up,
        bytes_down=sent * sum(not rec.unavailable for rec in records),
        upload_ratio=float32_up / bytes_up if bytes_up else None,
        download_ratio=download.ratio * len(download.payload) / sent,
        duration_s=seconds,
    )


def client_rows(
    records: list[ClientRecord], r: int, attempt: int, bytes_down: int
) -> list[dict[str, Any]]:
    """The client_updates rows of an attempt (clients that never got the model: 0 bytes down)."""
    return [
        {
            "round": r + 1,
            "attempt": attempt,
            "bytes_down": 0 if rec.unavailable else bytes_down,
            **rec.row(),
        }
        for rec in records
    ]


def history_record(
    row: dict[str, Any],
    server_metrics: dict[str, float],
    counts: dict[str, int],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """A completed round's history record, appended to ``history`` with the run's totals."""
    record = {**row, **server_metrics, **counts}
    history.append(record)
    for key in ("bytes_up", "bytes_down"):  # the run so far, retried attempts included
        record[f"total_{key}"] = int(sum(h[key] for h in history))
    return record


def straggler_counts(records: list[ClientRecord], partial: list[str]) -> dict[str, int]:
    """Stragglers of an attempt: dropped ones and those whose partial work was kept."""
    late = sum(rec.failure is FailureReason.STRAGGLER for rec in records)
    return {"num_stragglers": late + len(partial), "num_partial": len(partial)}


def retry_message(
    r: int, attempt: int, count: int, min_clients: int, aggregator: Aggregator, *, last: bool
) -> str:
    """Why attempt ``attempt`` of round ``r`` (0-based) is retried, or the run stops."""
    needs = f"min_clients={min_clients}"
    if aggregator.min_updates > min_clients:
        needs = f"{aggregator.name} needs {aggregator.min_updates}"
    then = "stopping" if last else "retrying with a new cohort"
    return f"round {r + 1} attempt {attempt + 1}: only {count} valid updates ({needs}); {then}"


def model_row(
    r: int,
    params: np.ndarray,
    spec: ParamSpec,
    model_config: dict[str, Any],
    ev: dict[str, float],
) -> dict[str, Any]:
    """The models-table row of the global model after round ``r`` (0-based).

    ``params`` stays the (read-only) state vector itself, not a copy: the store converts
    it when it writes the row, and the checkpoint pickles it once with the state.
    """
    return {
        "round": r + 1,
        "params": params,
        "spec": spec.to_json(),
        "model_config": json.dumps(model_config),
        "metrics": json.dumps(ev),
        "accuracy": ev["accuracy"],
        "loss": ev["loss"],
        "created_at": now(),
    }
