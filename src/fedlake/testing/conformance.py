"""The conformance suite every executor passes: subclass it in your tests to check yours.

    from fedlake.testing import ExecutorConformance

    class TestMyExecutor(ExecutorConformance):
        def make_executor(self, fleet, store):
            return MyExecutor(fleet, store)

pytest then runs every ``test_`` method against it. What an executor must do, whatever
it runs on (this process, worker processes, Spark, remote clients):

- every client of the cohort answers exactly once, with a reply or a typed failure;
- a client's crash is its own typed failure (``FailureReason.ERROR``), never an exception
  and never its neighbours' failure;
- the same task gives the same replies, byte for byte (determinism), whatever the order
  of the cohort (order independence);
- what a client keeps between rounds stays in the store it was given, so the next round
  continues from it (the same as another executor would).

The fleet is :func:`toy_fleet`: logistic regression on small synthetic clients with top-k
uploads and error feedback (a client state that changes every round), and one client,
``"broken"``, whose data cannot be loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fedlake.algorithms.compressed import compressed
from fedlake.algorithms.fedavg import fedavg
from fedlake.client.fleet import ClientFleet
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.stores import ClientStateStore, MemoryStateStore
from fedlake.compression.messages import encode_model
from fedlake.core.algorithm import Algorithm
from fedlake.core.dataset import ClientDataset
from fedlake.core.task import ClientFailure, ClientOutcome, ClientReply, ClientTask, FailureReason
from fedlake.data.base import InMemoryClientData
from fedlake.orchestration.interfaces import Executor

__all__ = ["BROKEN", "BrokenClientData", "ExecutorConformance", "toy_fleet", "toy_task"]

BROKEN = "broken"  # the toy fleet's client whose data fails to load
FEATURES, CLASSES = 6, 3


class BrokenClientData(InMemoryClientData):
    """In-memory clients plus one, :data:`BROKEN`, whose data cannot be loaded."""

    def client_ids(self) -> Sequence[str]:
        """Every client id, the broken one last."""
        return [*super().client_ids(), BROKEN]

    def load(self, client_id: str) -> ClientDataset:
        """The client's data; the broken client raises."""
        if client_id == BROKEN:
            raise OSError("simulated read error: the client's data file is corrupt")
        return super().load(client_id)


def _recipe() -> Algorithm:
    return compressed(
        fedavg(client_lr=0.2, local_epochs=2, batch_size=8),
        upload=[{"kind": "topk", "ratio": 0.3}],
        error_feedback=True,
    )


def toy_data(clients: int = 6, seed: int = 0) -> BrokenClientData:
    """``clients`` small synthetic clients (each its own label skew) and the broken one."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(FEATURES, CLASSES))
    out = {}
    for i in range(clients):
        n = 20 + 7 * i
        x = (rng.normal(size=(n, FEATURES)) + i * 0.3).astype(np.float32)
        y = np.argmax(x @ w + rng.normal(scale=0.5, size=(n, CLASSES)), axis=1).astype(np.int64)
        out[f"c{i}"] = ClientDataset(x[: n - 5], y[: n - 5], x[n - 5 :], y[n - 5 :])
    return BrokenClientData(out)


def toy_fleet(clients: int = 6) -> ClientFleet:
    """A small fleet (picklable): logistic regression, top-k uploads with error feedback."""
    trainer = LogRegTrainer(FEATURES, CLASSES)
    return ClientFleet(toy_data(clients), trainer, functools.partial(_recipe))


def toy_task(fleet: ClientFleet, round_: int = 0, *, seed: int = 1) -> ClientTask:
    """A task of round ``round_`` carrying the trainer's initial model, moved a little."""
    params = fleet.trainer.init_params(seed) + np.float32(0.01 * round_)
    model = encode_model(params, None, None, np.random.default_rng(0))
    return ClientTask(round=round_, attempt=0, seed=seed, model=model)


def _by_client(outcomes: Iterator[ClientOutcome] | list[ClientOutcome]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in outcomes:
        assert o.client_id not in out, f"client {o.client_id!r} answered twice"
        out[o.client_id] = o
    return out


def _key(outcome: ClientOutcome) -> tuple[Any, ...]:
    """What must be equal between runs: the payload bytes, weight and metrics but time."""
    if isinstance(outcome, ClientFailure):
        return ("failure", outcome.reason, outcome.message)
    metrics = {k: v for k, v in outcome.metrics.items() if k != "duration_s"}
    return ("reply", dict(outcome.payloads), outcome.weight, metrics)


class ExecutorConformance:
    """Subclass and implement :meth:`make_executor`; every ``test_`` method is a check."""

    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        """A fresh executor running ``fleet``'s clients with their states in ``store``."""
        raise NotImplementedError

    def run(
        self, cohort: Sequence[str], task: ClientTask | None = None, *, store: Any = None
    ) -> dict[str, ClientOutcome]:
        """One map over ``cohort`` with a fresh executor; outcomes by client id."""
        fleet = toy_fleet()
        executor = self.make_executor(fleet, store if store is not None else MemoryStateStore())
        try:
            return _by_client(list(executor.map_clients(task or toy_task(fleet), cohort)))
        finally:
            executor.close()

    def test_every_client_answers_exactly_once(self) -> None:
        cohort = ["c0", "c3", "c1", BROKEN, "c5"]
        out = self.run(cohort)
        assert sorted(out) == sorted(cohort)
        assert all(isinstance(o, ClientReply) for c, o in out.items() if c != BROKEN)

    def test_a_crash_is_the_clients_own_typed_failure(self) -> None:
        out = self.run(["c0", BROKEN, "c2"])
        failure = out[BROKEN]
        assert isinstance(failure, ClientFailure)
        assert failure.reason is FailureReason.ERROR and failure.status == "failed"
        assert "simulated read error" in failure.message
        assert isinstance(out["c0"], ClientReply) and isinstance(out["c2"], ClientReply)

    def test_the_same_task_gives_the_same_replies(self) -> None:
        cohort = ["c0", "c1", "c2", "c4"]
        first, second = self.run(cohort), self.run(cohort)
        assert {c: _key(o) for c, o in first.items()} == {c: _key(o) for c, o in second.items()}

    def test_replies_do_not_depend_on_the_cohort_order(self) -> None:
        cohort = ["c0", "c1", "c2", "c3", "c4", "c5"]
        ordered, shuffled = self.run(cohort), self.run(cohort[::-1])
        assert {c: _key(o) for c, o in ordered.items()} == {c: _key(o) for c, o in shuffled.items()}

    def test_a_client_continues_from_the_state_it_kept(self) -> None:
        store = MemoryStateStore()
        fleet = toy_fleet()
        executor = self.make_executor(fleet, store)
        try:
            list(executor.map_clients(toy_task(fleet, 0), ["c1", "c2"]))
            kept = store.load("c1")
            assert kept is not None and kept["states"].get("error_feedback") is not None
            again = _by_client(list(executor.map_clients(toy_task(fleet, 1), ["c1", "c2"])))
        finally:
            executor.close()
        # the reference: the same two rounds in this process, one client after another
        reference = fleet.runtime(MemoryStateStore())
        for cid in ("c1", "c2"):
            reference.handle(toy_task(fleet, 0), cid)
        for cid in ("c1", "c2"):
            assert _key(again[cid]) == _key(reference.handle(toy_task(fleet, 1), cid))
