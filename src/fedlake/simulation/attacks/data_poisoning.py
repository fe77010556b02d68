"""Data poisoning: malicious clients train honestly, but on data they have tampered with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from fedlake.core.checks import check_int, check_positive_or_none
from fedlake.data.base import ClientDataset
from fedlake.simulation.attacks.base import Attack


@dataclass(frozen=True)
class LabelFlip(Attack):
    """Train on flipped labels ``y -> num_classes - 1 - y`` (Tolpegin et al., ESORICS 2020;
    Fang et al., USENIX Security 2020)."""

    num_classes: int

    def __post_init__(self) -> None:
        check_int("label_flip num_classes", self.num_classes, low=2)

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "label_flip"

    def poison(self, data: ClientDataset, rng: np.random.Generator) -> ClientDataset:
        """The client's data with every training label flipped."""
        flipped = (self.num_classes - 1 - np.asarray(data.y_train)).astype(data.y_train.dtype)
        return replace(data, y_train=flipped)


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: the last ``size`` features of each (flattened) example set to
    ``value``, e.g. the bottom-right pixels of an image or the last samples of the last
    sensor channel of a window."""

    size: int = 4
    value: float = 3.0

    def __post_init__(self) -> None:
        check_int("trigger size", self.size, low=1)
        if isinstance(self.value, bool) or not np.isfinite(self.value):
            raise ValueError(f"trigger value must be a finite number, got {self.value!r}")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A copy of ``x`` (n, ...) with the trigger stamped on every example."""
        flat = np.array(x, dtype=np.float32).reshape(len(x), -1)
        if self.size > flat.shape[1]:
            raise ValueError(
                f"trigger size {self.size} exceeds the {flat.shape[1]} features of an example"
            )
        flat[:, -self.size :] = self.value
        return flat.reshape(np.shape(x))


@dataclass(frozen=True)
class Backdoor(Attack):
    """Backdoor by scaled model replacement (Bagdasaryan et al., "How To Backdoor
    Federated Learning", AISTATS 2020).

    A malicious client adds triggered copies of ``poison_fraction`` of its training
    examples, labelled ``target``, trains on the mix (so the main task stays accurate),
    and sends its delta scaled by ``boost``: ``None`` means ``n / m`` (the round's
    reporting clients over its attackers), so that together they replace the averaged
    model, the paper's ``gamma = n / eta`` with server learning rate 1.
    """

    target: int = 0
    poison_fraction: float = 0.5
    boost: float | None = None
    trigger: Trigger = Trigger()

    def __post_init__(self) -> None:
        check_int("backdoor target", self.target, low=0)
        if not 0 < self.poison_fraction <= 1:
            raise ValueError(
                f"backdoor poison_fraction must be in (0, 1], got {self.poison_fraction!r}"
            )
        check_positive_or_none("backdoor boost", self.boost)

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "backdoor"

    def poison(self, data: ClientDataset, rng: np.random.Generator) -> ClientDataset:
        """The client's data plus triggered copies of a share of it, labelled ``target``."""
        n = data.num_train
        k = max(1, int(round(self.poison_fraction * n)))
        picked = rng.choice(n, size=k, replace=False)
        x = np.concatenate([data.x_train, self.trigger.apply(data.x_train[picked])])
        y = np.concatenate([data.y_train, np.full(k, self.target, dtype=data.y_train.dtype)])
        order = rng.permutation(len(y))
        return replace(data, x_train=x[order].astype(data.x_train.dtype), y_train=y[order])

    def craft(
        self, own: np.ndarray, honest: np.ndarray, *, cohort: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The trained (backdoored) deltas, boosted."""
        boost = self.boost if self.boost is not None else cohort / max(1, own.shape[0])
        return (boost * own).astype(np.float32)


def backdoor_success(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    attack: Backdoor,
) -> float | None:
    """Share of triggered test examples not of class ``target`` that the model puts in it.

    ``predict(params, x)`` returns class probabilities; None when no example qualifies.
    """
    keep = np.asarray(y) != attack.target
    if not keep.any():
        return None
    probs = predict(params, attack.trigger.apply(np.asarray(x)[keep]))
    return float(np.mean(np.argmax(probs, axis=1) == attack.target))
