"""Evaluation of the global model on the clients' own test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlake.client.trainer import Trainer
from fedlake.data.base import ClientData


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


def model_score(accuracy: float, loss: float) -> tuple[float, float]:
    """Ranking key of a global model: higher accuracy first, then lower loss.

    Accuracy on a small test set ties often (a plateau); the loss then picks the
    better-fitted model, so the champion is not simply the first round to reach it.
    """
    return (float(accuracy), -float(loss))
