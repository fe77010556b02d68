"""Every executor fedlake ships passes the executor conformance suite (fedlake.testing)."""

from __future__ import annotations

from fedlake.backends import InlineExecutor, ProcessExecutor
from fedlake.client.fleet import ClientFleet
from fedlake.client.stores import ClientStateStore
from fedlake.orchestration.interfaces import Executor
from fedlake.simulation import AdversarialExecutor, Population, PopulationExecutor
from fedlake.simulation.attacks import Adversary, SignFlip
from fedlake.testing import ExecutorConformance


class TestInlineVectorised(ExecutorConformance):
    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        return InlineExecutor(fleet, store)


class TestInlineOneByOne(ExecutorConformance):
    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        return InlineExecutor(fleet, store, chunk=1)


class TestInlineSmallChunks(ExecutorConformance):
    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        return InlineExecutor(fleet, store, chunk=2)


class TestProcess(ExecutorConformance):
    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        return ProcessExecutor(fleet, store, workers=2)


class TestPopulationWrapper(ExecutorConformance):
    """A population model that drops nobody passes everything through."""

    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        return PopulationExecutor(InlineExecutor(fleet, store), Population(), epochs=2)


class TestAdversarialWrapperWithoutAttackers(ExecutorConformance):
    """An adversary that controls no client of these cohorts changes nothing."""

    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Executor:
        codec = fleet.algorithm.compression.upload
        inner = InlineExecutor(fleet, store)
        return AdversarialExecutor(
            inner, Adversary(SignFlip(), 0.0), dim=fleet.trainer.spec.size, codec=codec
        )
