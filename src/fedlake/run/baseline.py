"""Pooled training, the yardstick of a federated run (simulation only).

What federated learning costs in accuracy is answered by training the same model
centrally on every client's training rows put together, with the same local
hyperparameters and as many passes over each row as a client that took part in
every round made, then evaluating both models on the same test rows. Pooling the
rows is what a real deployment must never do: this exists only in simulation,
where every client's rows are on this machine anyway.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedlake.core.algorithm import LocalConfig
from fedlake.core.trainer import Trainer
from fedlake.data.base import ClientData
from fedlake.simulation.evaluation import EvalSet

__all__ = ["BASELINE_FILE", "PooledBaseline", "baseline_rows", "pooled_baseline", "read_baseline"]

BASELINE_FILE = "pooled_baseline.json"
POOLED_RNG = 11  # purpose tag of the pooled run's minibatch generator


@dataclass(frozen=True)
class PooledBaseline:
    """Pooled and federated accuracy/loss on the same test rows."""

    pooled_accuracy: float
    pooled_loss: float
    federated_accuracy: float
    federated_loss: float
    train_rows: int
    test_rows: int
    epochs: int

    @property
    def gap_points(self) -> float:
        """Federated minus pooled accuracy, in percentage points (negative: FL is behind)."""
        return 100.0 * (self.federated_accuracy - self.pooled_accuracy)

    def write(self, run_dir: Path) -> Path:
        """Write the comparison as JSON into ``run_dir``; returns the file."""
        path = Path(run_dir) / BASELINE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


def read_baseline(run_dir: Path) -> PooledBaseline | None:
    """The comparison a run wrote, or None when it has none."""
    path = Path(run_dir) / BASELINE_FILE
    if not path.exists():
        return None
    return PooledBaseline(**json.loads(path.read_text()))


def pooled_baseline(
    trainer: Trainer,
    data: ClientData,
    federated_params: np.ndarray,
    *,
    epochs: int,
    config: LocalConfig,
    seed: int,
) -> PooledBaseline:
    """Train ``trainer`` on all clients' pooled train rows; compare with ``federated_params``.

    Both models are evaluated on the concatenated test rows of every client (the
    federation's own evaluation set when it evaluates every client). ``config`` gives the
    batch size and learning rate; ``epochs`` replaces its epoch count.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    ids = list(data.client_ids())
    xs, ys = [], []
    for cid in ids:
        ds = data.load(cid)
        xs.append(ds.x_train)
        ys.append(ds.y_train)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) == 0:
        raise ValueError("no client has training rows to pool")
    test = EvalSet.build(data, ids)
    rng = np.random.default_rng([seed, POOLED_RNG])
    local = LocalConfig(epochs=epochs, batch_size=config.batch_size, lr=config.lr)
    fit = trainer.fit(trainer.init_params(seed), x, y, config=local, rng=rng)
    pooled = test.evaluate(trainer, fit.params)
    federated = test.evaluate(trainer, np.asarray(federated_params, dtype=np.float32))
    return PooledBaseline(
        pooled_accuracy=float(pooled["accuracy"]),
        pooled_loss=float(pooled["loss"]),
        federated_accuracy=float(federated["accuracy"]),
        federated_loss=float(federated["loss"]),
        train_rows=int(len(y)),
        test_rows=int(len(test.y)),
        epochs=int(epochs),
    )


def baseline_rows(b: PooledBaseline) -> list[tuple[str, str]]:
    """(label, value) rows comparing the last federated model with pooled training."""
    return [
        (
            "pooled training",
            f"accuracy {b.pooled_accuracy:.4f}, loss {b.pooled_loss:.4f} "
            f"({b.epochs} epochs on {b.train_rows} pooled rows; simulation only)",
        ),
        (
            "  federated (last round)",
            f"accuracy {b.federated_accuracy:.4f}, loss {b.federated_loss:.4f} "
            f"({b.gap_points:+.1f} points vs pooled, on the same {b.test_rows} test rows)",
        ),
    ]
