"""Fakes of fedlake's seams and the conformance suite every executor passes, for your tests."""

from fedlake.testing.conformance import (
    BROKEN,
    BrokenClientData,
    ExecutorConformance,
    toy_fleet,
    toy_task,
)
from fedlake.testing.fakes import MemoryStore, NullTracker

__all__ = [
    "BROKEN",
    "BrokenClientData",
    "ExecutorConformance",
    "MemoryStore",
    "NullTracker",
    "toy_fleet",
    "toy_task",
]
