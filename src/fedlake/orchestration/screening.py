"""Turn a round's raw client results into accepted updates and per-client records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from fedlake.attacks.adversary import Adversary
from fedlake.backends.base import Executor
from fedlake.client.local import ClientFailure, ClientJob, ClientResult, ClientTask
from fedlake.core.codec import CodecError
from fedlake.core.update import DELTA, ClientUpdate, finite_number, validate_update


def in_cohort_order(
    results: Iterable[ClientResult], cohort: Sequence[str]
) -> Iterator[ClientResult]:
    """Yield results in cohort order whatever order they finished in.

    Aggregation order then never depends on scheduling, so runs are
    bit-reproducible; only out-of-order results are buffered.
    """
    position = {cid: i for i, cid in enumerate(cohort)}
    buffer: dict[int, ClientResult] = {}
    nxt = 0
    for r in results:
        buffer[position[r.client_id]] = r
        while nxt in buffer:
            yield buffer.pop(nxt)
            nxt += 1
    for i in sorted(buffer):
        yield buffer[i]


def client_row(result: ClientResult, status: str, reason: str | None) -> dict[str, Any]:
    """The client_updates row (metadata only, never parameters) of one result."""
    if isinstance(result, ClientFailure):
        return {
            "client_id": result.client_id,
            "status": status,
            "reason": reason,
            "num_examples": 0,
            "bytes": 0,
        }
    # A rejected update is untrusted: any vector or metric may be missing or malformed.
    delta = np.asarray(result.vectors.get(DELTA, np.empty(0, np.float32)))
    finite = delta.dtype.kind == "f" and bool(np.isfinite(delta).all())
    examples = finite_number(result.metrics.get("num_examples", result.weight))
    return {
        "client_id": result.client_id,
        "status": status,
        "reason": reason,
        "num_examples": int(examples) if examples is not None and examples >= 0 else 0,
        "update_norm": float(np.linalg.norm(delta)) if finite else None,
        "bytes": result.nbytes(),
        "train_loss": finite_number(result.metrics.get("train_loss")),
        "duration_s": finite_number(result.metrics.get("duration_s")),
    }


def problems(rows: Sequence[dict[str, Any]]) -> str | None:
    """One line on a round's failed and rejected clients, with an example reason, or None."""
    parts = []
    for status in ("failed", "rejected"):
        bad = [row for row in rows if row["status"] == status]
        if bad:
            first = bad[0]
            parts.append(f"{len(bad)} {status} (e.g. {first['client_id']}: {first['reason']})")
    if not parts:
        return None
    return f"{' and '.join(parts)} of {len(rows)} clients; every reason is in client_updates"


def screen(
    results: Iterable[ClientResult],
    dim: int,
    rows: list[dict[str, Any]],
    on_result: Callable[[], None] | None = None,
    decode: Callable[[ClientUpdate], ClientUpdate] | None = None,
    required: Sequence[str] = (),
) -> Iterator[ClientUpdate]:
    """Yield the valid updates; append a row for every result (accepted, rejected, dropped).

    ``decode`` turns an update's wire payloads into vectors; a payload it cannot read
    (a CodecError) rejects the update with the decoder's reason. An update without one of
    the ``required`` vectors (SCAFFOLD's control) is rejected too.
    """
    for r in results:
        if on_result is not None:
            on_result()
        if isinstance(r, ClientFailure):
            rows.append(client_row(r, r.status, r.reason))
            continue
        if decode is not None:
            try:
                r = decode(r)
            except CodecError as exc:
                rows.append(client_row(r, "rejected", f"undecodable update: {exc}"))
                continue
        reason = validate_update(r, dim)
        missing = [name for name in required if name not in r.vectors]
        if reason is None and missing:
            reason = f"missing {missing[0]!r} vector"
        if reason is not None:
            rows.append(client_row(r, "rejected", reason))
            continue
        rows.append(client_row(r, "accepted", None))
        yield r


def client_results(
    executor: Executor,
    job: ClientJob,
    task: ClientTask,
    active: Sequence[str],
    *,
    adversary: Adversary | None,
    decode: Callable[[ClientUpdate], ClientUpdate],
    mask: np.ndarray | None,
) -> Iterator[ClientResult]:
    """The active clients' results in cohort order, after the simulated adversary's crafting.

    ``mask`` marks the positions uploads carry (not pruned, not personal).
    """
    results = in_cohort_order(executor.map_clients(job, task, active), active)
    if adversary is None or not task.malicious or not adversary.attack.crafts:
        return results
    upload = job.algorithm.compression.upload
    dim = int(np.asarray(task.params).size)
    return iter(  # the omniscient adversary needs the whole cohort
        adversary.corrupt_round(
            list(results),
            task.malicious,
            seed=task.seed,
            round_=task.round,
            attempt=task.attempt,
            dim=dim,
            decode=decode,
            mask=mask,
            codec=upload,
        )
    )
