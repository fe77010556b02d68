"""Central evaluation (simulation only): the global model, and each client's personal model,
on the clients' own test splits.

A simulator can look at every client's test split and at the personal state each keeps;
a deployment cannot, which is why this lives in the simulation wing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlake.client.stores import MemoryStateStore
from fedlake.core.algorithm import Algorithm
from fedlake.core.plugin import ClientPlugin, PersonalContext
from fedlake.core.rng import client_key, round_rng
from fedlake.core.trainer import Trainer
from fedlake.data.base import ClientData
from fedlake.orchestration.sampling import sample_cohort

__all__ = [
    "DEFAULT_EVAL_CLIENTS",
    "EVAL_RNG",
    "HOLDOUT_RNG",
    "PERSONAL_RNG",
    "CentralEvaluation",
    "EvalSet",
    "split_holdout",
]

EVAL_RNG = 5  # purpose tag of the evaluation sample's generator
PERSONAL_RNG = 11  # purpose tag of the generators of fine-tuning for evaluation
HOLDOUT_RNG = 17  # purpose tag of the generator drawing the held-out clients
# Without an explicit eval_clients, larger populations are evaluated on a fixed sample of
# this many clients: every user's test split each round would not scale to millions.
DEFAULT_EVAL_CLIENTS = 1000


@dataclass(frozen=True)
class EvalSet:
    """The concatenated test splits of the evaluation clients.

    Evaluating on the concatenation is the example-weighted mean over clients.
    """

    x: np.ndarray
    y: np.ndarray
    clients: tuple[str, ...]

    @classmethod
    def build(cls, data: ClientData, client_ids: Sequence[str]) -> EvalSet:
        """Concatenate the test splits of ``client_ids`` (clients without one are skipped)."""
        xs, ys, used = [], [], []
        for cid in client_ids:
            ds = data.load(cid)
            if ds.num_test:
                xs.append(ds.x_test)
                ys.append(ds.y_test)
                used.append(cid)
        if not xs:
            raise ValueError("no evaluation client has a test split")
        return cls(np.concatenate(xs), np.concatenate(ys), tuple(used))

    def evaluate(self, trainer: Trainer, params: np.ndarray) -> dict[str, float]:
        """Loss and accuracy of ``params`` on this set."""
        return trainer.evaluate(params, self.x, self.y)


def split_holdout(client_ids: Sequence[str], count: int, seed: int) -> tuple[list[str], list[str]]:
    """(training clients, held-out clients): ``count`` clients, drawn with the run's seed,
    never train and evaluate the global model (new clubs, new users); 0: none held out.

    Raises:
        ValueError: ``count`` leaves no client to train.
    """
    ids = list(client_ids)
    if count == 0:
        return ids, []
    if not 1 <= count < len(ids):
        raise ValueError(
            f"holdout_clients must be in [0, {len(ids) - 1}] with {len(ids)} clients "
            f"(some must train), got {count}"
        )
    held = sample_cohort(ids, count, round_rng(seed, 0, HOLDOUT_RNG))
    out = set(held)
    return [c for c in ids if c not in out], held


class CentralEvaluation:
    """The global model on the evaluation clients' test splits, and personal models if any.

    Args:
        data: every client's data.
        trainer: evaluates (and fine-tunes) params.
        client_ids: the population.
        algorithm: its personalising plugin, if any, says which model each client uses.
        store: the simulated clients' states (their personal models).
        seed: the run's seed (the evaluation sample, fine-tuning).
        eval_clients: how many clients' test splits to use (None: all of them, or a
            fixed sample of :data:`DEFAULT_EVAL_CLIENTS` for larger populations).
    """

    def __init__(
        self,
        data: ClientData,
        trainer: Trainer,
        client_ids: Sequence[str],
        *,
        algorithm: Algorithm,
        store: MemoryStateStore,
        seed: int,
        eval_clients: int | None = None,
    ) -> None:
        self.data = data
        self.trainer = trainer
        self.client_ids = client_ids
        self.algorithm = algorithm
        self.store = store
        self.seed = seed
        self.eval_clients = eval_clients
        self.eval_set: EvalSet | None = None

    def prepare(self) -> str | None:
        """Load the evaluation clients' test splits (a fixed sample for large populations)."""
        ids = self.client_ids
        size = self.eval_clients
        note = None
        if size is None and len(ids) > DEFAULT_EVAL_CLIENTS:
            size = DEFAULT_EVAL_CLIENTS
            note = (
                f"evaluating on the test splits of {size:,} of {len(ids):,} clients, the same "
                "every round (set federation.eval_clients to choose how many)"
            )
        if size is not None and size < len(ids):
            ids = sample_cohort(ids, size, round_rng(self.seed, 0, EVAL_RNG))
        self.eval_set = EvalSet.build(self.data, ids)
        return note

    def evaluate(
        self, params: np.ndarray, round_: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The global model's loss and accuracy; the personal models' after round ``round_``."""
        if self.eval_set is None:
            self.prepare()
        assert self.eval_set is not None
        ev = self.eval_set.evaluate(self.trainer, params)
        plugin = self.algorithm.personal
        if plugin is None:
            return ev, {}
        return ev, self.personal(plugin, params, round_)

    def personal(self, plugin: ClientPlugin, params: np.ndarray, round_: int) -> dict[str, float]:
        """Each client's personal model on its own test split, example-weighted over clients.

        Clients without test examples are skipped; clients without a kept state use the
        global model (fine-tuned, for ``finetune``). Fine-tuning client ``c`` draws from
        ``round_rng(seed, round_, PERSONAL_RNG, client_key(c))``.

        Returns:
            ``personal_loss`` and ``personal_accuracy`` (means weighted by test examples),
            ``personal_examples``, ``personal_clients`` (clients evaluated) and
            ``personal_seen`` (how many of them had a kept personal state).
        """
        assert plugin.personal is not None and self.eval_set is not None
        loss = accuracy = examples = 0.0
        clients = seen = 0
        for cid in self.eval_set.clients:
            ds = self.data.load(cid)
            if ds.num_test == 0:
                continue
            state = _state(self.store.load(cid), plugin.name)
            ctx = PersonalContext(
                trainer=self.trainer,
                global_params=params,
                x_train=ds.x_train,
                y_train=ds.y_train,
                config=self.algorithm.local,
                rng=round_rng(self.seed, round_, PERSONAL_RNG, client_key(cid)),
            )
            own = plugin.personal(ctx, state)
            result = self.trainer.evaluate(own, ds.x_test, ds.y_test)
            n = float(result.get("examples", ds.num_test))
            loss += n * float(result["loss"])
            accuracy += n * float(result["accuracy"])
            examples += n
            clients += 1
            seen += int(state is not None)
        if clients == 0:
            raise ValueError(
                f"no client has a test split to evaluate personal models on "
                f"({len(self.eval_set.clients)} clients given)"
            )
        return {
            "personal_loss": loss / examples,
            "personal_accuracy": accuracy / examples,
            "personal_examples": examples,
            "personal_clients": float(clients),
            "personal_seen": float(seen),
        }


def _state(record: Any, name: str) -> Any:
    """A plugin's committed state in a client's record (None when it has none)."""
    if not record:
        return None
    return (record.get("states") or {}).get(name)
