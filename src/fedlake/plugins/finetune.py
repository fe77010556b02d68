"""Fine-tuning: each client would use the global model trained on its own train split
(evaluation only; training is the recipe's). No state."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlake.core.personal import Personalization, personal_config
from fedlake.core.plugin import ClientPlugin, PersonalContext

__all__ = ["finetune"]


def finetune(p: Personalization) -> ClientPlugin:
    """Fine-tuning: each client would use the global model trained on its own data."""

    def personal(ctx: PersonalContext, state: Any) -> np.ndarray:
        anchor = np.asarray(ctx.global_params, dtype=np.float32)
        if len(ctx.y_train) == 0:  # nothing to fine-tune on
            return anchor.copy()
        config = personal_config(p, ctx.config)
        fit = ctx.trainer.fit(anchor, ctx.x_train, ctx.y_train, config=config, rng=ctx.rng)
        return np.asarray(fit.params, dtype=np.float32)

    return ClientPlugin("finetune", personal=personal)
