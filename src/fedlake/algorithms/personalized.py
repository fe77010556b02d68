"""Personalisation on top of any recipe: fine-tuning evaluation, FedPer layers, Ditto."""

from __future__ import annotations

from dataclasses import replace

from fedlake.core.algorithm import Algorithm
from fedlake.core.personal import Personalization, personal_config


def personalized(algorithm: Algorithm, personal: Personalization) -> Algorithm:
    """``algorithm`` whose clients also keep a personal model (or layers) of their own.

    Raises:
        ValueError: a Ditto step size that would diverge (``lam * lr > 2``), or FedPer
            with SCAFFOLD (its control variates would cover the personal layers).
    """
    personal_config(personal, algorithm.local)  # validates Ditto's step against the local lr
    if personal.kind == "fedper" and algorithm.scaffold:
        raise ValueError("FedPer personal layers cannot be combined with SCAFFOLD")
    return replace(algorithm, personal=personal)
