"""A secure attempt: the round's updates summed by SecAgg+, through the executor seam.

The server sees masked vectors and their sum, never an update: four ``map_clients``
calls, one per stage (:class:`~fedlake.core.task.SecureStage`), each carrying the round's
public :class:`~fedlake.secagg.SecAggConfig` in its extras and every client's own
message in ``task.inbox``. Only ``masked_input`` trains (the same task, generators and
plugins as a plain round). A client's failure in a stage is a protocol dropout; a
message the server refuses is recorded as a rejected client with its reason; a round
the protocol cannot finish (too many dropouts) fails the attempt with the reason, and
the usual retry policy applies. The decoded sum is the cohort's weighted mean (the
weights travel summed, as one extra coordinate) and steps the server like a plain
round's aggregate. Bonawitz et al., ACM CCS 2017; Bell et al., ACM CCS 2020.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlake.client.secure import (
    COHORT,
    CONFIG,
    ENCODING,
    PAYLOAD,
    weight_coordinate,
)
from fedlake.core.algorithm import Algorithm
from fedlake.core.rng import round_rng
from fedlake.core.state import Aggregated, ServerState
from fedlake.core.task import SECURE_STAGE, ClientFailure, ClientReply, ClientTask, SecureStage
from fedlake.core.update import DELTA
from fedlake.orchestration.attempt import AttemptResult
from fedlake.orchestration.events import RunObserver
from fedlake.orchestration.interfaces import Executor, RoundReporter
from fedlake.orchestration.records import ClientRecord, ClientStatus
from fedlake.orchestration.screening import failure_record
from fedlake.orchestration.secure_dp import dp_encoding

if TYPE_CHECKING:
    from fedlake.privacy.distributed import DistributedDP
    from fedlake.secagg import FixedPoint, ServerSession

__all__ = ["SecureSettings", "check_secure", "secure_attempt", "secure_encoding"]

GRAPH_RNG = 14  # purpose tag of the generator of an attempt's graph seed
LINEAR_MEANS = ("weighted_mean", "mean")  # the rules whose aggregate is a sum, divided
LEVELS = 2**16  # default ring: at least this many levels per clip, per client
_SHORT = {  # stage -> the name its metrics use
    SecureStage.ADVERTISE: "advertise",
    SecureStage.SHARE_KEYS: "share",
    SecureStage.MASKED_INPUT: "masked",
    SecureStage.UNMASK: "unmask",
}


@dataclass(frozen=True)
class SecureSettings:
    """The ``[secure_aggregation]`` settings (None: chosen per attempt for its cohort).

    Args:
        clip: per-coordinate clip of each update before encoding.
        max_weight: the largest client weight (its training examples) the ring holds.
        expected_dropout: the dropout rate the default graph must survive.
        degree: k, neighbours per client.
        threshold: t, shares needed to rebuild a secret.
        bits: the ring's width.
        levels: quantisation levels per clip (a ``quantize`` upload stage's
            2^(bits - 1); None: ``LEVELS`` and a ring of at least 32 bits).
        dp: distributed DP (each client adds a Skellam share of the noise; None: off).
    """

    clip: float = 1.0
    max_weight: float = 65536.0
    expected_dropout: float = 0.1
    degree: int | None = None
    threshold: int | None = None
    bits: int | None = None
    levels: int | None = None
    dp: DistributedDP | None = None


def check_secure(algorithm: Algorithm) -> None:
    """Refuse, with the reason, an algorithm whose aggregate is not the sum that SecAgg+
    reveals (or whose replies carry more than the masked update)."""
    agg = algorithm.aggregator.name
    if agg not in LINEAR_MEANS:
        kind = "a linear" if algorithm.aggregator.linear else "a non-linear"
        raise ValueError(
            f"secure aggregation reveals only the sum of the updates, and {agg} is {kind} "
            f"rule that needs {'each update' if kind == 'a non-linear' else 'per-update work'} "
            "on the server: use the (weighted) mean aggregator with secure aggregation"
        )
    if algorithm.vectors:
        raise ValueError(
            f"{', '.join(algorithm.vectors)}: the server plugin averages extra vectors of "
            "each client (SCAFFOLD's control variates), which secure aggregation does not "
            "carry yet; use an algorithm without server-side vectors"
        )
    if algorithm.compression.upload is not None:
        raise ValueError(
            "compression.upload: a secure update travels as a fixed-point vector masked in "
            "a ring; sparsifiers (top-k, random masks) and float16 would break the sum, "
            "only a single quantize stage (the ring's levels) composes with it"
        )


def _graph(settings: SecureSettings, n: int) -> tuple[int, int]:
    """(k, t) for a cohort of ``n``: the settings', else the smallest safe choice, else
    (small cohorts) the complete graph with the smallest safe threshold."""
    from fedlake.secagg import check_parameters, choose_parameters

    if settings.degree is not None:
        k = min(settings.degree, n - 1)
        t = settings.threshold if settings.threshold is not None else k // 2 + 1
        check_parameters(n, k, min(t, k))
        return k, min(t, k)
    try:
        chosen = choose_parameters(n, dropout_rate=settings.expected_dropout)
        return chosen.degree, chosen.threshold
    except ValueError:  # a small cohort: no sparse graph is safe enough, take them all
        return n - 1, (n - 1) // 2 + 1


def secure_encoding(settings: SecureSettings, n: int, *, weighted: bool) -> FixedPoint:
    """The attempt's fixed-point encoding for ``n`` clients (the ring: the settings', else
    the smallest of at least 32 bits holding ``LEVELS`` levels per clip per client).

    Raises:
        ValueError: no ring of at most 64 bits holds the sum (the message says why).
    """
    from fedlake.secagg import BITS, fixed_point, required_bits

    w = settings.max_weight if weighted else 1.0
    levels = settings.levels or LEVELS
    bits = settings.bits
    if bits is None:
        need = required_bits(
            clip=settings.clip, scale=levels / settings.clip, clients=n, max_weight=w
        )
        least = 32 if settings.levels is None else 16  # a quantize stage: its own width
        bits = next((b for b in BITS if b >= max(least, need)), None)
        if bits is None:
            raise ValueError(
                f"{n} clients of weight up to {w:g} need {need} bits at {levels} levels per "
                "clip, more than 64: lower secure_aggregation.max_weight or the cohort"
            )
    scale = levels / settings.clip if settings.levels is not None else None
    return fixed_point(clip=settings.clip, bits=bits, clients=n, max_weight=w, scale=scale)


@dataclass
class _Book:
    """What the server learns of each client across the stages: records and traffic."""

    cohort: list[str]
    records: dict[str, ClientRecord] = field(default_factory=dict)
    up: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)
    failures: list[ClientFailure] = field(default_factory=list)

    def fail(self, failure: ClientFailure, stage: SecureStage) -> None:
        rec = failure_record(failure)
        rec.reason = f"{stage.value}: {rec.reason}"
        self.records[failure.client_id] = rec
        self.failures.append(failure)

    def reject(self, cid: str, stage: SecureStage, reason: str) -> None:
        self.records[cid] = ClientRecord(
            cid, ClientStatus.REJECTED, f"{stage.value}: {reason}", replied=True
        )

    def drop(self, cid: str, reason: str) -> None:
        self.records.setdefault(cid, ClientRecord(cid, ClientStatus.DROPPED, reason))

    def traffic(self, stage: SecureStage, key: str, nbytes: int) -> None:
        name = f"secagg_bytes_{key}_{_SHORT[stage]}"
        self.metrics[name] = self.metrics.get(name, 0) + int(nbytes)

    def ordered(self) -> list[ClientRecord]:
        out = []
        for cid in self.cohort:
            rec = self.records.get(cid) or ClientRecord(cid, ClientStatus.DROPPED, "no answer")
            rec.bytes = self.up.get(cid, 0)
            out.append(rec)
        return out


def secure_attempt(
    *,
    algorithm: Algorithm,
    executor: Executor,
    state: ServerState,
    task: ClientTask,
    cohort: list[str],
    sent: np.ndarray | None,
    observer: RunObserver,
    settings: SecureSettings,
    run_id: str,
) -> AttemptResult:
    """One attempt of a round with SecAgg+ (see the module); never raises for a client's
    fault or an aborted protocol: the result then has no aggregate."""
    from fedlake.secagg import RoundAborted, SecAggConfig, ServerSession

    n = len(cohort)
    book = _Book(list(cohort))
    result = AttemptResult(list(cohort), [], None, 0, failures=book.failures)
    if n < 3:
        for cid in cohort:
            book.drop(cid, "secure aggregation needs at least 3 clients in the cohort")
        result.records = book.ordered()
        observer.message(f"round {task.round + 1}: a secure round needs >= 3 clients, got {n}")
        return result
    weighted = algorithm.aggregator.name == "weighted_mean" and settings.dp is None
    values = int(sent.sum()) if sent is not None else state.dim
    private = None
    if settings.dp is not None:  # no weight coordinate: the sum has a fixed denominator
        private = dp_encoding(
            settings.dp,
            clients=n,
            length=values,
            levels=settings.levels or LEVELS,
            expected_dropout=settings.expected_dropout,
            bits=settings.bits,
        )
        encoding, length = private.encoding, values
    else:
        encoding, length = secure_encoding(settings, n, weighted=weighted), values + 1
    k, t = _graph(settings, n)
    config = SecAggConfig(
        run_id=f"{run_id}/{task.attempt}".encode(),
        round=task.round,
        clients=tuple(range(1, n + 1)),
        degree=k,
        threshold=t,
        bits=encoding.bits,
        length=length,
        graph_seed=round_rng(task.seed, task.round, GRAPH_RNG, task.attempt).bytes(16),
    )
    extras = {
        CONFIG: config.to_bytes(),
        COHORT: json.dumps(list(cohort)).encode(),
        ENCODING: json.dumps(
            {
                "clip": encoding.clip,
                "scale": encoding.scale,
                "bits": encoding.bits,
                "clients": encoding.clients,
                "max_weight": encoding.max_weight,
                "weighted": weighted,
                "dp": None if private is None else private.extras(),
            }
        ).encode(),
    }
    book.metrics.update(secagg_degree=k, secagg_threshold=t, secagg_bits=encoding.bits)
    server = ServerSession(config)
    ids = {cid: i + 1 for i, cid in enumerate(cohort)}
    by_id = {i: cid for cid, i in ids.items()}
    stages = _Stages(executor, task, extras, server, ids, book, observer)
    try:
        inbox: Mapping[str, bytes] = {}
        members = list(cohort)
        for stage, close in (
            (SecureStage.ADVERTISE, server.close_advertise),
            (SecureStage.SHARE_KEYS, server.close_share_keys),
            (SecureStage.MASKED_INPUT, server.close_masked_input),
        ):
            stages.run(stage, members, inbox)
            out = close()
            inbox = {by_id[u]: m.to_bytes() for u, m in out.items()}
            members = [c for c in cohort if c in inbox]
            if private is not None and stage is SecureStage.MASKED_INPUT:
                private.check_survivors(len(members))  # before anything is unmasked
        stages.run(SecureStage.UNMASK, members, inbox)
        aggregate = server.close_unmask()
        if private is not None:
            private.check_survivors(len(aggregate.survivors))
    except RoundAborted as exc:
        reason = f"secure aggregation aborted: {exc.reason}"
        observer.message(f"round {task.round + 1} attempt {task.attempt + 1}: {reason}")
        for cid in cohort:
            if cid not in book.records:
                book.records[cid] = ClientRecord(cid, ClientStatus.DROPPED, reason)
        result.records = book.ordered()
        result.executor_metrics = _reported(executor, book.metrics)
        return result
    for u, why in server.excluded.items():
        book.drop(by_id[u], f"left out by secure aggregation: {why}")
    for rejection in server.rejections:  # e.g. a neighbour's bundle that did not open
        if rejection.sender in by_id and by_id[rejection.sender] not in book.records:
            book.reject(by_id[rejection.sender], SecureStage.MASKED_INPUT, rejection.reason)
    survivors = [by_id[u] for u in aggregate.survivors]
    for cid in survivors:
        rec = book.records.get(cid)
        if rec is None or rec.status is not ClientStatus.ACCEPTED:  # its input is in the sum
            book.records[cid] = _accepted(cid, stages.trained.get(cid))
    if private is not None:
        delta, total_weight = private.delta(aggregate.total, state.dim, sent)
    else:
        delta, total_weight = _decode(aggregate.total, encoding, state.dim, sent)
    for name, size in zip(
        ("advertised", "shared", "masked", "unmasked"), aggregate.stage_sizes, strict=True
    ):
        book.metrics[f"secagg_{name}"] = int(size)
    book.metrics["secagg_clipped"] = int(stages.clipped)
    result.records = book.ordered()
    result.count = len(survivors)
    result.executor_metrics = _reported(executor, book.metrics)
    if survivors and total_weight > 0:
        result.aggregated = Aggregated(
            {DELTA: delta}, state.aggregator_state, len(survivors), total_weight
        )
    return result


def _accepted(cid: str, reply: ClientReply | None) -> ClientRecord:
    """The record of a client whose masked input is in the sum (no norm: never seen)."""
    metrics: Mapping[str, float] = reply.metrics if reply is not None else {}
    return ClientRecord(
        cid,
        ClientStatus.ACCEPTED,
        None,
        replied=True,
        train_loss=metrics.get("train_loss"),
        duration_s=metrics.get("duration_s"),
    )


def _decode(
    total: np.ndarray, encoding: FixedPoint, dim: int, sent: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """The weighted mean delta (full length, zeros where nothing is sent) and the total
    weight, from the unmasked sum."""
    signed = encoding.centred(total).astype(np.float64)
    total_weight = float(signed[-1] / (encoding.scale * weight_coordinate(encoding.clip)))
    delta = np.zeros(dim, dtype=np.float32)
    if total_weight > 0:
        mean = signed[:-1] / (encoding.scale * total_weight)
        if sent is None:
            delta[:] = mean
        else:
            delta[sent] = mean
    return delta, total_weight


def _reported(executor: Executor, metrics: dict[str, int]) -> dict[str, int]:
    """The executor's own round counts (simulated attackers, ...) and the protocol's."""
    own = executor.round_metrics() if isinstance(executor, RoundReporter) else {}
    return {**own, **metrics}


@dataclass
class _Stages:
    """Runs one stage: a task to the stage's clients, their messages into the server."""

    executor: Executor
    task: ClientTask
    extras: dict[str, bytes]
    server: ServerSession
    ids: dict[str, int]
    book: _Book
    observer: RunObserver
    trained: dict[str, ClientReply] = field(default_factory=dict)
    clipped: int = 0

    def run(self, stage: SecureStage, members: list[str], inbox: Mapping[str, bytes]) -> None:
        """Send ``stage`` to ``members`` and feed the server what comes back."""
        from fedlake.secagg import MalformedMessage, ProtocolViolation, Rejected, decode

        if not members:
            return
        extras = {**self.extras, SECURE_STAGE: stage.value.encode("ascii")}
        if stage is SecureStage.MASKED_INPUT:  # trains: the plain round's task, plus these
            task = replace(self.task, extras={**self.task.extras, **extras}, inbox=dict(inbox))
        else:  # nothing to train: no model
            task = replace(self.task, model=b"", extras=extras, inbox=dict(inbox))
        per_client = sum(len(v) for v in task.extras.values()) + len(task.model)
        done = 0
        for outcome in self.executor.map_clients(task, members):
            cid = outcome.client_id
            if cid not in self.ids:
                continue
            self.book.traffic(stage, "down", per_client + len(inbox.get(cid, b"")))
            if stage is SecureStage.MASKED_INPUT:
                done += 1
                self.observer.client_finished(round=task.round + 1, done=done, total=len(members))
            if isinstance(outcome, ClientFailure):
                self.book.fail(outcome, stage)
                continue
            size = outcome.nbytes()
            self.book.up[cid] = self.book.up.get(cid, 0) + size
            self.book.traffic(stage, "up", size)
            try:
                raw = outcome.payloads.get(PAYLOAD)
                if raw is None:
                    raise ProtocolViolation(
                        f"no {PAYLOAD!r} payload", stage=stage.value, sender=self.ids[cid]
                    )
                message: Any = decode(raw)
                if getattr(message, "sender", None) != self.ids[cid]:
                    raise ProtocolViolation(
                        f"a message signed as client {getattr(message, 'sender', None)}",
                        stage=stage.value,
                        sender=self.ids[cid],
                    )
                self.server.receive(message)
            except (Rejected, MalformedMessage) as exc:
                self.book.reject(cid, stage, getattr(exc, "reason", str(exc)))
                continue
            if stage is SecureStage.MASKED_INPUT:
                self.trained[cid] = outcome
                clipped = outcome.metrics.get("secagg_clipped", 0.0)
                self.clipped += int(clipped) if np.isfinite(clipped) else 0
