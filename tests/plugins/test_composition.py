"""Plugins compose in one expression, and their order in the tuple does not change a round.

Every hook runs at a fixed point of the client's round, and each plugin's state is kept
under its own name, so "SCAFFOLD + Ditto + error feedback" in any order trains the same
model bit for bit.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace

import numpy as np
import pytest

from fedlake.algorithms import compressed, scaffold
from fedlake.client.logreg import LogRegTrainer
from fedlake.core.algorithm import Algorithm, with_plugins
from fedlake.core.personal import Personalization
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration.sampling import CohortSpec
from fedlake.plugins import ditto, error_feedback
from fedlake.simulation import Population, simulate

DATA = fedprox_synthetic(1, 1, num_devices=8, seed=1)


def scaffold_ditto_feedback(order: tuple[int, ...]) -> Algorithm:
    """SCAFFOLD + Ditto + error feedback, the client plugins in the given order."""
    base = compressed(
        scaffold(client_lr=0.05, batch_size=10), upload=[{"kind": "topk", "ratio": 0.4}]
    )
    plugins = (  # SCAFFOLD's client side, then Ditto and error feedback
        *base.client_plugins,
        ditto(Personalization("ditto", lam=0.3)),
        error_feedback(base.compression.upload),
    )
    return replace(base, client_plugins=tuple(plugins[i] for i in order))


def test_scaffold_ditto_and_error_feedback_is_one_expression() -> None:
    codec = compressed(scaffold(), upload=[{"kind": "topk", "ratio": 0.4}]).compression.upload
    algorithm = with_plugins(
        scaffold(), client=(ditto(Personalization("ditto")), error_feedback(codec))
    )
    assert [p.name for p in algorithm.client_plugins] == ["scaffold", "ditto", "error_feedback"]
    assert algorithm.vectors == ("control",) and algorithm.needs_acks


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_order_of_plugins_does_not_change_the_model(tmp_path, order) -> None:
    def run(plugins_order, where):
        return simulate(
            recipe=functools.partial(scaffold_ditto_feedback, plugins_order),
            trainer=LogRegTrainer(60, 10),
            data=DATA,
            run_dir=tmp_path / where,
            rounds=3,
            cohort=CohortSpec(count=5),
            seed=2,
            population=Population(dropout=0.2),
        ).run()

    names = [p.name for p in scaffold_ditto_feedback(order).client_plugins]
    assert sorted(names) == ["ditto", "error_feedback", "scaffold"]
    reference = run((0, 1, 2), "reference")
    other = run(order, "other")
    assert other.state.params.tobytes() == reference.state.params.tobytes()
    np.testing.assert_array_equal(
        other.state.plugins["scaffold"], reference.state.plugins["scaffold"]
    )
    assert [h["personal_accuracy"] for h in other.history] == [
        h["personal_accuracy"] for h in reference.history
    ]
