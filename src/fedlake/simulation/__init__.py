"""The simulation wing: everything only a simulator does (nothing in core, client or
orchestration imports it). Attacks and the adversarial executor, the population model
(dropouts, stragglers, device speeds), the in-memory client stores, central evaluation on
clients' test splits, and :func:`simulate`, which composes them around a Federation."""

from fedlake.simulation.adversarial import AdversarialExecutor
from fedlake.simulation.evaluation import CentralEvaluation, EvalSet
from fedlake.simulation.federation import simulate
from fedlake.simulation.population import Population, PopulationExecutor
from fedlake.simulation.stores import SimulatedStores

__all__ = [
    "AdversarialExecutor",
    "CentralEvaluation",
    "EvalSet",
    "Population",
    "PopulationExecutor",
    "SimulatedStores",
    "simulate",
]
