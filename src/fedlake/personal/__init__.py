"""Personalised federated learning: fine-tuning, FedPer and Ditto, as pure client functions."""

from fedlake.core.personal import (
    KINDS,
    Personalization,
    mask_for,
    personal_config,
    personal_mask,
)
from fedlake.personal.client import PERSONAL, finish, kept_personal, start_params
from fedlake.personal.evaluate import PERSONAL_RNG, evaluate_personal, personal_params

__all__ = [
    "KINDS",
    "PERSONAL",
    "PERSONAL_RNG",
    "Personalization",
    "evaluate_personal",
    "finish",
    "kept_personal",
    "mask_for",
    "personal_config",
    "personal_mask",
    "personal_params",
    "start_params",
]
