"""A round's row of the rounds table, from its clients' rows and its download."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from fedlake.client.workload import STRAGGLER
from fedlake.core.aggregator import Aggregator
from fedlake.core.params import ParamSpec
from fedlake.core.update import ClientUpdate
from fedlake.orchestration.sinks import now
from fedlake.orchestration.transport import Download


def round_row(
    r: int,
    attempt: int,
    cohort: list[str],
    rows: list[dict[str, Any]],
    seconds: float,
    download: Download,
    *,
    extra_down: int = 0,
) -> dict[str, Any]:
    """The rounds-table row of attempt ``attempt`` of round ``r`` (0-based), before evaluation.

    ``extra_down`` is what each client downloads besides the model (SCAFFOLD's control).
    """
    status = [row["status"] for row in rows]
    accepted = [row for row in rows if row["status"] == "accepted"]
    weights = np.array([row["num_examples"] for row in accepted], dtype=float)
    reported = [row.get("train_loss") for row in accepted]
    losses = np.array([x or 0.0 for x in reported], dtype=float)
    # under DP per-client losses are not published: no mean of them either
    known = bool(weights.sum()) and any(x is not None for x in reported)
    bytes_up = int(sum(row["bytes"] for row in rows))
    senders = sum(1 for row in rows if row["bytes"] > 0)
    float32_up = 4 * download.received.size * senders  # what uncompressed FedAvg sends
    sent = len(download.payload) + extra_down
    return {
        "round": r + 1,
        "attempt": attempt,
        "status": "completed",
        "cohort": json.dumps(cohort),
        "num_sampled": len(cohort),
        "num_completed": status.count("accepted"),
        "num_dropped": status.count("dropped"),
        "num_failed": status.count("failed"),
        "num_rejected": status.count("rejected"),
        "train_loss": float(weights @ losses / weights.sum()) if known else None,
        "eval_loss": None,
        "eval_accuracy": None,
        "bytes_up": bytes_up,
        "bytes_down": sent * sum(not unavailable(row) for row in rows),
        "upload_ratio": float32_up / bytes_up if bytes_up else None,
        "download_ratio": download.ratio * len(download.payload) / sent,
        "duration_s": seconds,
        "metrics": "{}",
        "epsilon": None,  # privacy spent so far (DP runs), at ``delta``
        "delta": None,
        "created_at": now(),
    }


def unavailable(row: dict[str, Any]) -> bool:
    """Whether a client row is a client that never got the model (a dropout, not a straggler)."""
    return row["status"] == "dropped" and not str(row.get("reason") or "").startswith(STRAGGLER)


def partial_work(updates: Iterable[ClientUpdate], into: list[str]) -> Iterator[ClientUpdate]:
    """Pass ``updates`` through, noting the clients that sent partial work (stragglers kept)."""
    for u in updates:
        if "work_fraction" in u.metrics:
            into.append(u.client_id)
        yield u


def straggler_counts(rows: list[dict[str, Any]], partial: list[str]) -> dict[str, int]:
    """Stragglers of an attempt: dropped ones (from their rows) and those whose partial work
    was kept (``partial``)."""
    late = sum(row["status"] == "dropped" and not unavailable(row) for row in rows)
    return {"num_stragglers": late + len(partial), "num_partial": len(partial)}


def dropped_rows(cohort: list[str], dropped: set[str]) -> list[dict[str, Any]]:
    """The client_updates rows of the cohort's clients that dropped out (in cohort order)."""
    return [
        {
            "client_id": c,
            "status": "dropped",
            "reason": "unavailable (simulated dropout)",
            "num_examples": 0,
            "bytes": 0,
        }
        for c in cohort
        if c in dropped
    ]


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
    """The models-table row of the global model after round ``r`` (0-based)."""
    return {
        "round": r + 1,
        "params": params.tobytes(),
        "spec": spec.to_json(),
        "model_config": json.dumps(model_config),
        "metrics": json.dumps(ev),
        "accuracy": ev["accuracy"],
        "loss": ev["loss"],
        "created_at": now(),
    }
