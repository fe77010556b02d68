"""The model each client would use, and its accuracy on the client's own test split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedlake.client.trainer import Trainer
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization, personal_config
from fedlake.core.state import round_rng
from fedlake.data.base import ClientData
from fedlake.personal.client import PERSONAL, kept_personal, start_params

__all__ = ["PERSONAL_RNG", "evaluate_personal", "personal_params"]

PERSONAL_RNG = 11  # purpose tag of the generators of fine-tuning for evaluation


def personal_params(
    p: Personalization,
    *,
    trainer: Trainer,
    global_params: np.ndarray,
    kept: Mapping[str, Any] | None,
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: LocalConfig,
    rng: np.random.Generator,
    mask: np.ndarray | None,
) -> np.ndarray:
    """The params a client would use (float32); a client never trained gets global ones.

    - finetune: the global model trained on ``(x_train, y_train)`` for ``p.epochs``
      epochs at ``p.lr`` (or ``config.lr``) and ``config.batch_size``, with ``rng``
      (the global model itself when the client has no train examples).
    - fedper: the global shared values with the client's kept personal ones.
    - ditto: the client's kept personal model ``v``.
    """
    anchor = np.asarray(global_params, dtype=np.float32)
    if p.kind == "fedper":
        return start_params(p, anchor, kept, mask)
    if p.kind == "ditto":
        v = kept_personal(kept, anchor.size)
        return anchor.copy() if v is None else v.copy()
    if len(y_train) == 0:  # finetune with nothing to fine-tune on
        return anchor.copy()
    fit = trainer.fit(anchor, x_train, y_train, config=personal_config(p, config), rng=rng)
    return np.asarray(fit.params, dtype=np.float32)


def evaluate_personal(
    p: Personalization,
    *,
    trainer: Trainer,
    data: ClientData,
    client_ids: Sequence[str],
    global_params: np.ndarray,
    client_states: Mapping[str, Any],
    config: LocalConfig,
    seed: int,
    round_: int,
    mask: np.ndarray | None,
) -> dict[str, float]:
    """Each client's personal model on its own test split, example-weighted over clients.

    Clients without test examples are skipped; clients without a kept state use the
    global model (fine-tuned, for ``"finetune"``). Fine-tuning client ``c`` draws from
    ``round_rng(seed, round_, PERSONAL_RNG, client_key(c))``.

    Returns:
        ``personal_loss`` and ``personal_accuracy`` (means weighted by test examples),
        ``personal_examples``, ``personal_clients`` (clients evaluated) and
        ``personal_seen`` (how many of them had a kept personal state).

    Raises:
        ValueError: no client in ``client_ids`` has a test split.
    """
    from fedlake.client.local import client_key  # lazy: client.local may import this package

    loss = accuracy = examples = 0.0
    clients = seen = 0
    for cid in client_ids:
        ds = data.load(cid)
        if ds.num_test == 0:
            continue
        kept = client_states.get(cid)
        rng = round_rng(seed, round_, PERSONAL_RNG, client_key(cid))
        params = personal_params(
            p,
            trainer=trainer,
            global_params=global_params,
            kept=kept,
            x_train=ds.x_train,
            y_train=ds.y_train,
            config=config,
            rng=rng,
            mask=mask,
        )
        result = trainer.evaluate(params, ds.x_test, ds.y_test)
        n = float(result.get("examples", ds.num_test))
        loss += n * float(result["loss"])
        accuracy += n * float(result["accuracy"])
        examples += n
        clients += 1
        seen += int(kept is not None and kept.get(PERSONAL) is not None)
    if clients == 0:
        raise ValueError(
            f"no client has a test split to evaluate personal models on "
            f"({len(client_ids)} clients given)"
        )
    return {
        "personal_loss": loss / examples,
        "personal_accuracy": accuracy / examples,
        "personal_examples": examples,
        "personal_clients": float(clients),
        "personal_seen": float(seen),
    }
