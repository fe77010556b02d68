"""Simulated Byzantine clients: data poisoning, model poisoning and the round's adversary."""

from fedlake.simulation.attacks.adversary import Adversary
from fedlake.simulation.attacks.base import ATTACK_RNG, Attack, malicious_count
from fedlake.simulation.attacks.data_poisoning import Backdoor, LabelFlip, Trigger, backdoor_success
from fedlake.simulation.attacks.model_poisoning import (
    ALittleIsEnough,
    GaussianNoise,
    InnerProductManipulation,
    SignFlip,
    alie_z,
)
from fedlake.simulation.attacks.registry import ATTACKS, build_attack

__all__ = [
    "ATTACKS",
    "ATTACK_RNG",
    "ALittleIsEnough",
    "Adversary",
    "Attack",
    "Backdoor",
    "GaussianNoise",
    "InnerProductManipulation",
    "LabelFlip",
    "SignFlip",
    "Trigger",
    "alie_z",
    "backdoor_success",
    "build_attack",
    "malicious_count",
]
