"""What the server's HTTP side and its Federation share: the open attempt, replies, clients.

The Federation's thread opens an attempt (:meth:`Coordinator.open_attempt`) and reads its
outcomes from a queue; the HTTP handlers, on the event loop's thread, offer each sampled
client its task, take replies and failures in, and note heartbeats. Every method is
thread-safe; long-polling clients wait on an asyncio event per client that the Federation's
thread sets through the loop, so a task reaches a waiting client at once, not at the next
poll. Audit rows (joins, submissions, refusals) wait here until the next checkpoint writes
them.
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fedlake.backends.remote.window import Window
from fedlake.backends.remote.wire import (
    FrameError,
    model_checksum,
    reply_from_bytes,
    stage_number,
    task_parts,
)
from fedlake.core.task import ClientFailure, ClientOutcome, ClientTask, FailureReason

__all__ = ["Attempt", "Coordinator", "Refusal"]

CONNECTED_S = 60.0  # a client seen within this long counts as connected


class Refusal(Exception):
    """A request the coordinator refuses: an HTTP status and the reason (audited)."""

    def __init__(self, status: int, reason: str, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after_s = status, reason, retry_after_s


@dataclass
class Attempt:
    """An open attempt: its task, cohort, deadline, who fetched, replied or failed.

    A secure attempt opens four times, once per stage, with the same (round, attempt)
    and its stage's number (``stage``, 1-4; 0: a plain attempt): an offer, a URL
    (``?stage=``) and a reply name it, and one of another stage is refused (409).
    """

    task: ClientTask
    cohort: list[str]
    deadline: float  # time.time() when it closes
    outcomes: queue.Queue[ClientOutcome] = field(default_factory=queue.Queue)
    fetched: set[str] = field(default_factory=set)
    answered: dict[str, str] = field(
        default_factory=dict
    )  # client -> reply's body digest / failure
    model_checksum: str = ""  # xxh3-128 of the encoded model (see model_checksum)
    stage: int = 0  # the secure stage's number (wire.stage_number), 0: a plain attempt

    @property
    def tag(self) -> tuple[int, int]:
        """``(round, attempt)``, 0-based round."""
        return (self.task.round, self.task.attempt)


class Coordinator:
    """The server's shared round state (see the module docstring)."""

    def __init__(self, run_id: str, *, refusals_kept: int = 50) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self._attempt: Attempt | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._seen: dict[str, float] = {}
        self._joined: set[str] = set()
        self._audit: list[dict[str, Any]] = []
        self.refusals: deque[dict[str, Any]] = deque(maxlen=refusals_kept)
        self.rounds: list[dict[str, Any]] = []  # completed rounds' records (status page)
        self.finished: str | None = None
        self.window: Window | None = None  # FedBuff's slots (see buffered), else None

    def buffered(self, concurrency: int, timeout_s: float) -> Window:
        """Serve FedBuff: clients pull the newest version into one of ``concurrency`` slots."""
        with self._lock:
            self.window = Window(concurrency, timeout_s)
            return self.window

    # -- the event loop's side --------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the HTTP handlers run on (set when the app starts)."""
        self._loop = loop

    def waiter(self, client: str) -> asyncio.Event:
        """The event that wakes ``client``'s long-poll, cleared (on the loop's thread)."""
        with self._lock:
            event = self._events.setdefault(client, asyncio.Event())
        event.clear()
        return event

    def seen(self, client: str, *, action: str | None = None) -> None:
        """Note that ``client`` made an authenticated request (its first one: a join)."""
        with self._lock:
            self._seen[client] = time.time()
            first = client not in self._joined
            self._joined.add(client)
        if first:
            self.audit(client, "client.join", client, {})
        if action is not None:
            self.audit(client, action, client, {})

    def offer(self, client: str) -> dict[str, Any] | None:
        """The task waiting for ``client`` (round, attempt, deadline), or None."""
        now = time.time()
        with self._lock:
            if self.window is not None:
                slot = self.window.assign(client, now)
                if slot is None:
                    return None
                attempt, deadline = slot.attempt, slot.expires
            else:
                open_ = self._attempt
                if open_ is None or client not in open_.cohort or client in open_.answered:
                    return None
                attempt, deadline = open_, open_.deadline
            return {  # the round as people count it (1-based), as in every URL
                "run": self.run_id,
                "round": attempt.task.round + 1,
                "attempt": attempt.task.attempt,
                "deadline": deadline,
                "deadline_in_s": max(0.0, deadline - now),
                "model_xxh3_128": attempt.model_checksum,
                "stage": attempt.stage,
            }

    def _open_for(self, client: str, round_: int, attempt_: int, stage: int = 0) -> Attempt:
        """The open attempt when it is ``(round_, attempt_)`` at ``stage`` and ``client`` is
        in its cohort, else Refusal (409, 403). Call it holding the lock."""
        if self.window is not None:
            held = self.window.holder(client, (round_, attempt_))
            if held is None:
                what = f"round {round_ + 1} attempt {attempt_}"
                raise Refusal(409, f"{what} is not open for {client!r} (no slot on it)")
            return held
        attempt = self._attempt
        if attempt is None or attempt.tag != (round_, attempt_):
            raise Refusal(409, f"round {round_ + 1} attempt {attempt_} is not open")
        if attempt.stage != stage:
            raise Refusal(
                409,
                f"round {round_ + 1} attempt {attempt_} is at stage {attempt.stage}, "
                f"not stage {stage}",
            )
        if client not in attempt.cohort:
            raise Refusal(403, f"client {client!r} is not in this attempt's cohort")
        return attempt

    def task_frame(self, client: str, round_: int, attempt_: int, stage: int = 0) -> list[Any]:
        """The pieces of ``client``'s task frame (the shared model is not copied)."""
        with self._lock:
            attempt = self._open_for(client, round_, attempt_, stage)
            attempt.fetched.add(client)
            task = attempt.task
        return task_parts(task, client, self.run_id)

    def submit(
        self,
        client: str,
        round_: int,
        attempt_: int,
        body: bytes | memoryview,
        digest: str,
        stage: int = 0,
    ) -> str:
        """Take ``client``'s reply frame; ``"accepted"`` or ``"duplicate"``, else Refusal."""
        with self._lock:
            if self.window is not None and self.window.answered.get(client) == (
                (round_, attempt_),
                digest,
            ):
                return "duplicate"  # FedBuff: its slot is gone, its reply was taken
            attempt = self._open_for(client, round_, attempt_, stage)
            before = attempt.answered.get(client)
            if before is not None:
                if before == digest:
                    return "duplicate"
                raise Refusal(409, "a different reply to this attempt was already received")
        try:
            reply, header = reply_from_bytes(body)
        except FrameError as exc:
            raise Refusal(400, f"unreadable reply: {exc}") from None
        if reply.client_id != client:
            raise Refusal(403, f"a reply signed by {client!r} names client {reply.client_id!r}")
        if header["run"] != self.run_id:
            raise Refusal(409, f"reply for run {header['run']!r}, this is {self.run_id!r}")
        if (header["round"], header["attempt"]) != (round_, attempt_):
            raise Refusal(409, "the reply's round and attempt differ from its URL's")
        if header["stage"] != stage:
            raise Refusal(409, f"a reply to stage {header['stage']} sent as one to stage {stage}")
        with self._lock:
            if not self._still_open(client, attempt):
                raise Refusal(409, f"round {round_ + 1} attempt {attempt_} closed meanwhile")
            attempt.answered[client] = digest
            if self.window is not None:
                self.window.answered[client] = (attempt.tag, digest)
            self._deliver(client, attempt, reply)
        details = {"attempt": attempt_, "bytes": len(body), "blake3": digest}
        if stage:
            details["stage"] = stage
        self.audit(client, "reply.submit", f"round {round_ + 1}", details)
        return "accepted"

    def fail(
        self, client: str, round_: int, attempt_: int, reason: str, message: str, stage: int = 0
    ) -> None:
        """A sampled client says it will not answer (it refuses, or it crashed)."""
        try:
            typed = FailureReason(reason)
        except ValueError:
            raise Refusal(400, f"unknown failure reason {reason!r}") from None
        with self._lock:
            attempt = self._open_for(client, round_, attempt_, stage)
            if client in attempt.answered:
                raise Refusal(409, "this client already answered this attempt")
            attempt.answered[client] = f"failure:{typed.value}"
            self._deliver(client, attempt, ClientFailure(client, typed, message[:2000]))

    def _still_open(self, client: str, attempt: Attempt) -> bool:
        """Whether ``client`` may still answer ``attempt`` (call it holding the lock)."""
        if self.window is not None:
            return self.window.holder(client, attempt.tag) is attempt
        return self._attempt is attempt and client not in attempt.answered

    def _deliver(self, client: str, attempt: Attempt, outcome: ClientOutcome) -> None:
        """Hand ``outcome`` to the Federation's thread (call it holding the lock)."""
        if self.window is None:
            attempt.outcomes.put(outcome)
            return
        self.window.deliver(client, outcome)
        self._wake_eligible()  # a slot is free

    def refuse(self, client: str | None, where: str, status: int, reason: str) -> None:
        """Record a refused request (status page and audit)."""
        row = {"time": time.time(), "client": client, "where": where, "status": status,
               "reason": reason}  # fmt: skip
        with self._lock:
            self.refusals.append(row)
        self.audit(client or "unknown", "request.refused", where, {"status": status,
                   "reason": reason})  # fmt: skip

    # -- the Federation's side ----------------------------------------------------------------
    def open_attempt(self, task: ClientTask, cohort: Sequence[str], timeout_s: float) -> Attempt:
        """Offer ``task`` to ``cohort`` until ``timeout_s`` from now; wake their long-polls."""
        attempt = Attempt(task, list(cohort), time.time() + timeout_s, stage=stage_number(task))
        attempt.model_checksum = model_checksum(task.model)
        with self._lock:
            self._attempt = attempt
            if self.window is not None:  # FedBuff: the version clients pull from now on
                self.window.publish(attempt)
                self._wake_eligible()
                return attempt
            events = [self._events.get(c) for c in cohort]
        self._wake([e for e in events if e is not None])
        return attempt

    def take(self, client: str) -> None:
        """FedBuff: a step took ``client``'s outcome (no new slot before the next step)."""
        with self._lock:
            assert self.window is not None
            self.window.take(client)

    def expire(self) -> list[str]:
        """FedBuff: free the slots past their time; their clients."""
        with self._lock:
            assert self.window is not None
            late = self.window.expire(time.time())
            if late:
                self._wake_eligible()
            return late

    def _wake_eligible(self) -> None:
        """Wake the long-polls of clients that may take a free slot (holding the lock)."""
        window = self.window
        assert window is not None
        if window.free() > 0:
            self._wake([e for c, e in self._events.items() if window.eligible(c)])

    def close_attempt(self, attempt: Attempt) -> list[str]:
        """Close ``attempt``; the cohort's clients that fetched its task."""
        with self._lock:
            if self._attempt is attempt:
                self._attempt = None
            return sorted(attempt.fetched)

    def finish(self, reason: str) -> None:
        """The federation ended: long-polls return, clients are told."""
        with self._lock:
            self.finished = reason
            self._attempt = None
            events = list(self._events.values())
        self._wake(events)

    def record_round(self, record: dict[str, Any]) -> None:
        """A completed round's record, for the status page."""
        keep = ("round", "attempt", "eval_accuracy", "eval_loss", "train_loss", "num_completed",
                "num_sampled", "num_dropped", "num_failed", "num_rejected", "bytes_up",
                "bytes_down", "epsilon", "delta", "duration_s")  # fmt: skip
        row = {k: _finite(record.get(k)) for k in keep}  # JSON has no NaN: a diverged loss
        with self._lock:
            self.rounds.append(row)

    def audit(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """Queue an audit row (written with the next checkpoint)."""
        row = {
            "time": datetime.now(UTC),
            "actor": actor,
            "action": action,
            "object": obj,
            "details": json.dumps(details, default=str, sort_keys=True),
        }
        with self._lock:
            self._audit.append(row)

    def drain_audit(self) -> list[dict[str, Any]]:
        """The audit rows queued since the last call."""
        with self._lock:
            rows, self._audit = self._audit, []
        return rows

    def status(self) -> dict[str, Any]:
        """What the operator's status page shows."""
        now = time.time()
        with self._lock:
            attempt = self._attempt
            connected = sorted(c for c, t in self._seen.items() if now - t < CONNECTED_S)
            answered = [] if attempt is None else list(attempt.answered.items())
            window = self.window
            sampled = [] if attempt is None else list(attempt.cohort)
            fetched = [] if attempt is None else sorted(attempt.fetched)
            if window is not None:  # FedBuff: who holds a slot, and who fetched its task
                sampled = sorted(window.slots)
                fetched = sorted(c for c, s in window.slots.items() if c in s.attempt.fetched)
            return {
                "run": self.run_id,
                "finished": self.finished,
                "round": None if attempt is None else attempt.task.round + 1,
                "attempt": None if attempt is None else attempt.task.attempt,
                "stage": None if attempt is None else attempt.stage,
                "deadline_in_s": None if attempt is None else max(0.0, attempt.deadline - now),
                "connected": connected,
                "sampled": sampled,
                "fetched": fetched,
                "finished_clients": sorted(
                    c for c, how in answered if not how.startswith("failure:")
                ),
                "failed_clients": sorted(c for c, how in answered if how.startswith("failure:")),
                "rounds": list(self.rounds),
                "refusals": list(self.refusals),
            }

    def _wake(self, events: list[asyncio.Event]) -> None:
        loop = self._loop
        if loop is None or not events:
            return
        for event in events:
            loop.call_soon_threadsafe(event.set)


def _finite(value: Any) -> Any:
    """``value``, with a non-finite float as None (JSON cannot carry NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
