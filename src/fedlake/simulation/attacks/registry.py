"""Attacks by name, for configs: ``{kind = "sign_flip", fraction = 0.2, scale = 4}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedlake.simulation.attacks.base import Attack
from fedlake.simulation.attacks.data_poisoning import Backdoor, LabelFlip, Trigger
from fedlake.simulation.attacks.model_poisoning import (
    ALittleIsEnough,
    GaussianNoise,
    InnerProductManipulation,
    SignFlip,
)

ATTACKS: dict[str, type[Attack]] = {
    "none": Attack,
    "label_flip": LabelFlip,
    "sign_flip": SignFlip,
    "gaussian": GaussianNoise,
    "backdoor": Backdoor,
    "alie": ALittleIsEnough,
    "ipm": InnerProductManipulation,
}


def build_attack(spec: Mapping[str, Any], *, num_classes: int) -> Attack:
    """The attack named by ``spec["kind"]`` with the rest of ``spec`` as its options.

    ``fraction`` (who attacks, not how) is ignored here; label flipping gets the
    scenario's ``num_classes`` and a backdoor's target is checked against it.
    """
    options = {k: v for k, v in spec.items() if k not in ("kind", "fraction")}
    kind = spec.get("kind")
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; accepted: {', '.join(ATTACKS)}")
    if kind == "label_flip":
        options["num_classes"] = num_classes
    if kind == "backdoor":
        trigger = {k: options.pop(k) for k in ("trigger_size", "trigger_value") if k in options}
        options["trigger"] = Trigger(**{k.removeprefix("trigger_"): v for k, v in trigger.items()})
        if options.get("target", 0) >= num_classes:
            raise ValueError(
                f"backdoor target must be a class in 0..{num_classes - 1}, got {options['target']}"
            )
    try:
        return ATTACKS[kind](**options)
    except TypeError as exc:  # an option the attack does not have
        raise ValueError(f"{kind}: {exc}") from None
