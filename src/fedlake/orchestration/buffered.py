"""Asynchronous buffered aggregation (FedBuff): what the server's rounds need of it.

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022): up to ``concurrency`` clients train at once, each on the model version it
pulled; the server takes one step every ``buffer`` (K) arrivals, each update's delta
weighted by its staleness ``tau`` (versions behind), and drops updates staler than
``max_staleness``. In a Federation a *round* is one server step: its "cohort" is the K
clients whose updates arrived, which a :class:`BufferedExecutor` says once they have.

The rules here are shared by the deployed server (``backends/remote``) and the simulated
clock (``simulation/fedbuff.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fedlake.core.algorithm import Algorithm
from fedlake.core.staleness import staleness_weight
from fedlake.core.task import (
    ClientFailure,
    ClientOutcome,
    ClientReply,
    ClientTask,
    FailureReason,
    Tag,
)

__all__ = [
    "BufferedExecutor",
    "FedBuffSettings",
    "Gathered",
    "check_buffered",
    "staleness_weight",
]


@dataclass(frozen=True)
class FedBuffSettings:
    """FedBuff's knobs (the paper's names: concurrency, K, max staleness, the rule)."""

    concurrency: int = 100
    buffer: int = 10
    max_staleness: int | None = None
    staleness: str = "sqrt"  # "sqrt": 1/sqrt(1+tau); "none": 1; "poly:a": (1+tau)^-a

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.buffer < 1:
            raise ValueError("concurrency and buffer must be >= 1")
        if self.buffer > self.concurrency:
            raise ValueError(
                f"buffer ({self.buffer}) > concurrency ({self.concurrency}): a step would "
                "wait for more clients than ever train at once"
            )
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")
        staleness_weight(self.staleness, 0)  # a bad rule fails here, not mid-run

    def weight(self, tau: int) -> float:
        """The weight of an update ``tau`` versions behind."""
        return staleness_weight(self.staleness, tau)

    def too_stale(self, tau: int) -> bool:
        """Whether an update ``tau`` versions behind is dropped."""
        return self.max_staleness is not None and tau > self.max_staleness


@dataclass
class Gathered:
    """What one step gathers: each client's outcome, the task it answers, the counts.

    An update staler than the maximum becomes a straggler failure (recorded, not used).
    """

    settings: FedBuffSettings
    version: int  # the step's round (0-based): an update's staleness is counted from it
    outcomes: dict[str, ClientOutcome] = field(default_factory=dict)
    pulled: dict[str, Tag] = field(default_factory=dict)
    good: int = 0
    stale: int = 0
    oldest: int = 0

    def add(self, outcome: ClientOutcome, tag: Tag) -> None:
        """Take ``outcome``, which answers the task ``tag``."""
        cid, tau = outcome.client_id, self.version - tag[0]
        if isinstance(outcome, ClientReply):
            if self.settings.too_stale(tau):
                self.stale += 1
                outcome = ClientFailure(
                    cid,
                    FailureReason.STRAGGLER,
                    f"stale: trained on version {tag[0]}, {tau} behind version {self.version} "
                    f"(max_staleness {self.settings.max_staleness})",
                )
            else:
                self.good += 1
                self.oldest = max(self.oldest, tau)
        self.outcomes[cid], self.pulled[cid] = outcome, tag

    def take(self, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """The outcomes of ``cohort`` (each handed out once)."""
        for cid in cohort:
            yield self.outcomes.pop(cid)

    def metrics(self) -> dict[str, int]:
        """The step's stale updates dropped and the largest staleness it took."""
        return {"stale_dropped": self.stale, "staleness_max": self.oldest}


SECURE_WITH_FEDBUFF = (
    "secure aggregation needs a fixed cohort that masks and unmasks together in "
    "one round; FedBuff's steps sum whichever clients arrive, from different "
    "model versions: use synchronous rounds (remove [fedbuff]) with secure aggregation"
)


def check_buffered(algorithm: Algorithm) -> None:
    """Refuse, with the reason, what FedBuff's stale updates would silently break."""
    if algorithm.has("secagg"):
        raise ValueError(SECURE_WITH_FEDBUFF)
    if algorithm.vectors:
        raise ValueError(
            f"{', '.join(algorithm.vectors)}: the server plugin's vectors answer the current "
            "round's extras (SCAFFOLD's control variates), which a stale update does not; "
            "FedBuff supports algorithms without server-side vectors (fedavg, fedprox, "
            "fedadam, ...)"
        )
    if algorithm.compression.pruning is not None:
        raise ValueError(
            "compression.prune changes the model's mask from step to step, and a stale "
            "update was encoded against an older mask: remove prune with [fedbuff] "
            "(upload and download codecs compose with it)"
        )


@runtime_checkable
class BufferedExecutor(Protocol):
    """An executor whose clients train on whatever model version they pulled (FedBuff).

    A round (one server step) first calls :meth:`gather`: the task becomes the version
    clients pull from now on, and the call returns once ``size`` updates have arrived
    (or its time ran out). ``map_clients(task, cohort)`` then yields those clients'
    outcomes; :meth:`pulled` says which task each answered.
    """

    settings: FedBuffSettings

    def gather(self, task: ClientTask, size: int) -> list[str]:
        """Publish ``task``; the clients whose outcomes the step takes, once ``size`` came."""
        ...

    def pulled(self) -> Mapping[str, Tag]:
        """The ``(round, attempt)`` each gathered client's outcome answers."""
        ...

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> object:
        """The gathered outcomes of ``cohort`` (see :class:`Executor`)."""
        ...

    def close(self) -> None:
        """Release workers and connections."""
        ...
