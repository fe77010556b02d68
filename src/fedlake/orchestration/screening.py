"""Turn a round's raw client outcomes into accepted updates and per-client records.

Nothing a client sends is trusted before it is checked: a reply is decoded (a payload the
codec cannot read is rejected with its reason), validated (dtype, length, finite values,
a positive weight, every vector the algorithm asks for) and only then aggregated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from fedlake.core.codec import CodecError
from fedlake.core.task import ClientFailure, ClientOutcome, ClientReply
from fedlake.core.update import DELTA, ClientUpdate, finite_number, validate_update
from fedlake.orchestration.records import ClientRecord, ClientStatus


def in_cohort_order(
    results: Iterable[ClientOutcome], cohort: Sequence[str]
) -> Iterator[ClientOutcome]:
    """Yield outcomes in cohort order whatever order they finished in.

    Aggregation order then never depends on scheduling, so runs are
    bit-reproducible; only out-of-order outcomes are buffered.
    """
    position = {cid: i for i, cid in enumerate(cohort)}
    buffer: dict[int, ClientOutcome] = {}
    nxt = 0
    for r in results:
        buffer[position[r.client_id]] = r
        while nxt in buffer:
            yield buffer.pop(nxt)
            nxt += 1
    for i in sorted(buffer):
        yield buffer[i]


def failure_record(failure: ClientFailure) -> ClientRecord:
    """The record of a client that sent nothing."""
    status = ClientStatus(failure.status)
    return ClientRecord(failure.client_id, status, failure.message, failure=failure.reason)


def delta_norm(update: ClientUpdate | None) -> float:
    """The norm of ``update``'s delta; NaN when it has none or it is no float vector."""
    # A rejected reply is untrusted: any vector or metric may be missing or malformed.
    vectors = update.vectors if update is not None else {}
    delta = np.asarray(vectors.get(DELTA, np.empty(0, np.float32)))
    return float(np.linalg.norm(delta)) if delta.dtype.kind == "f" else math.nan


def reply_record(
    reply: ClientReply,
    update: ClientUpdate | None,
    status: ClientStatus,
    reason: str | None,
    norm: float | None = None,
) -> ClientRecord:
    """The record of a reply (``update``: what it decoded to, None when it could not be;
    ``norm``: its :func:`delta_norm`, when known already)."""
    vectors = update.vectors if update is not None else {}
    delta = np.asarray(vectors.get(DELTA, np.empty(0, np.float32)))
    if norm is None:
        norm = delta_norm(update)
    # a finite norm means finite values (one pass); else look (finite values can overflow)
    finite = math.isfinite(norm) or (delta.dtype.kind == "f" and bool(np.isfinite(delta).all()))
    examples = finite_number(reply.metrics.get("num_examples", reply.weight))
    return ClientRecord(
        client_id=reply.client_id,
        status=status,
        reason=reason,
        num_examples=int(examples) if examples is not None and examples >= 0 else 0,
        bytes=reply.nbytes(),
        replied=True,
        update_norm=norm if finite else None,
        train_loss=finite_number(reply.metrics.get("train_loss")),
        duration_s=finite_number(reply.metrics.get("duration_s")),
    )


def problems(records: Sequence[ClientRecord]) -> str | None:
    """One line on a round's failed and rejected clients, with an example reason, or None."""
    parts = []
    for status in (ClientStatus.FAILED, ClientStatus.REJECTED):
        bad = [rec for rec in records if rec.status is status]
        if bad:
            first = bad[0]
            parts.append(f"{len(bad)} {status.value} (e.g. {first.client_id}: {first.reason})")
    if not parts:
        return None
    return f"{' and '.join(parts)} of {len(records)} clients; every reason is in client_updates"


def screen(
    outcomes: Iterable[ClientOutcome],
    dim: int,
    records: list[ClientRecord],
    decode: Callable[[ClientReply], ClientUpdate],
    *,
    on_result: Callable[[], None] | None = None,
    required: Sequence[str] = (),
    failures: list[ClientFailure] | None = None,
) -> Iterator[ClientUpdate]:
    """Yield the valid updates; append a record for every outcome (accepted, rejected, ...).

    ``decode`` turns a reply's payloads into vectors; a payload it cannot read (a
    CodecError) rejects the reply with the decoder's reason. A reply without one of the
    ``required`` vectors (SCAFFOLD's control) is rejected too. ``failures`` collects the
    typed failures.
    """
    for r in outcomes:
        update = screen_one(r, dim, records, decode, on_result, required, failures)
        if update is not None:
            yield update


def screen_in_cohort_order(
    outcomes: Iterable[ClientOutcome],
    cohort: Sequence[str],
    dim: int,
    records: list[ClientRecord],
    decode: Callable[[ClientReply], ClientUpdate],
    *,
    on_result: Callable[[], None] | None = None,
    required: Sequence[str] = (),
    failures: list[ClientFailure] | None = None,
) -> Iterator[ClientUpdate]:
    """:func:`screen` each outcome as it arrives, then yield the valid updates in cohort order.

    Decoding and checking a reply overlaps the transfers of the replies still coming (a
    remote round's tail); only the order of aggregation is fixed, so runs stay
    bit-reproducible. ``records`` and ``failures`` end in cohort order too.
    """
    position = {cid: i for i, cid in enumerate(cohort)}
    held: dict[int, ClientUpdate | None] = {}
    nxt = 0
    start, failed = len(records), len(failures) if failures is not None else 0
    for r in outcomes:
        held[position[r.client_id]] = screen_one(
            r, dim, records, decode, on_result, required, failures
        )
        while nxt in held:
            update = held.pop(nxt)
            nxt += 1
            if update is not None:
                yield update
    for i in sorted(held):
        update = held[i]
        if update is not None:
            yield update
    records[start:] = sorted(records[start:], key=lambda rec: position[rec.client_id])
    if failures is not None:
        failures[failed:] = sorted(failures[failed:], key=lambda f: position[f.client_id])


def screen_one(
    r: ClientOutcome,
    dim: int,
    records: list[ClientRecord],
    decode: Callable[[ClientReply], ClientUpdate],
    on_result: Callable[[], None] | None = None,
    required: Sequence[str] = (),
    failures: list[ClientFailure] | None = None,
) -> ClientUpdate | None:
    """One outcome's record appended; its update when valid, else None."""
    if on_result is not None:
        on_result()
    if isinstance(r, ClientFailure):
        records.append(failure_record(r))
        if failures is not None:
            failures.append(r)
        return None
    try:
        update = decode(r)
    except CodecError as exc:
        records.append(reply_record(r, None, ClientStatus.REJECTED, f"undecodable update: {exc}"))
        return None
    norm = delta_norm(update)  # first: a finite norm spares validation a pass over the delta
    reason = validate_update(update, dim, finite=(DELTA,) if math.isfinite(norm) else ())
    missing = [name for name in required if name not in update.vectors]
    if reason is None and missing:
        reason = f"missing {missing[0]!r} vector"
    if reason is not None:
        records.append(reply_record(r, update, ClientStatus.REJECTED, reason, norm))
        return None
    records.append(reply_record(r, update, ClientStatus.ACCEPTED, None, norm))
    return update
