"""Personalisation on top of any recipe: fine-tuning evaluation, FedPer layers, Ditto."""

from __future__ import annotations

from fedlake.core.algorithm import Algorithm, with_plugins
from fedlake.core.personal import Personalization, personal_config
from fedlake.plugins.personal import personalization


def personalized(algorithm: Algorithm, personal: Personalization) -> Algorithm:
    """``algorithm`` whose clients also keep a personal model (or layers) of their own.

    Raises:
        ValueError: a Ditto step size that would diverge (``lam * lr > 2``), or FedPer
            with SCAFFOLD (its control variates would cover the personal layers).
    """
    personal_config(personal, algorithm.local)  # validates Ditto's step against the local lr
    if personal.kind == "fedper" and algorithm.has("scaffold"):
        raise ValueError("FedPer personal layers cannot be combined with SCAFFOLD")
    return with_plugins(algorithm, client=(personalization(personal),))
