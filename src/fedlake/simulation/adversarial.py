"""The adversarial executor: a share of every cohort is malicious (simulation only).

It wraps any executor. Per attempt it picks the attackers from the sampled cohort, runs
them as the malicious client program when the attack poisons data (the inner executor
must run client variants then), and, when the attack crafts updates, replaces their
replies' deltas after seeing the whole cohort's (the adversary is omniscient: the
strongest threat model). Crafted deltas are encoded with the round's upload codec, so
they travel, count and are screened like any other reply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from fedlake.client.masks import upload_mask
from fedlake.compression.messages import decode_reply, model_mask
from fedlake.core.codec import Codec
from fedlake.core.task import ClientFailure, ClientOutcome, ClientTask, FailureReason
from fedlake.orchestration.interfaces import Executor
from fedlake.orchestration.screening import in_cohort_order
from fedlake.simulation.attacks.adversary import Adversary
from fedlake.simulation.attacks.poisoning import MALICIOUS
from fedlake.simulation.chain import map_inner

__all__ = ["AdversarialExecutor"]


class AdversarialExecutor:
    """``inner`` with ``adversary``'s share of each cohort malicious.

    Args:
        inner: runs the clients (with the malicious variant, for data-poisoning attacks).
        adversary: the attack and the malicious share of each cohort.
        dim: the model's length.
        codec: the upload codec (crafted deltas are encoded with it).
        kept_local: positions that never leave the clients (FedPer), or None.
    """

    def __init__(
        self,
        inner: Executor,
        adversary: Adversary,
        *,
        dim: int,
        codec: Codec | None,
        kept_local: np.ndarray | None = None,
    ) -> None:
        self.inner = inner
        self.adversary = adversary
        self.dim = dim
        self.codec = codec
        self.kept_local = kept_local
        self._malicious = 0

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """The cohort's outcomes, the attackers' poisoned or crafted."""
        attack = self.adversary.attack
        chosen = self.adversary.choose_in_round(
            cohort, seed=task.seed, round_=task.round, attempt=task.attempt
        )
        own = dict(variants or {})
        if attack.poisons:
            own.update({cid: MALICIOUS for cid in chosen})
        results = list(in_cohort_order(map_inner(self.inner, task, cohort, own), cohort))
        offline = {
            r.client_id
            for r in results
            if isinstance(r, ClientFailure) and r.reason is FailureReason.UNAVAILABLE
        }
        malicious = chosen.difference(offline)
        self._malicious = len(malicious)
        if attack.crafts and malicious:
            sent = upload_mask(model_mask(task.model, self.dim), self.kept_local)
            results = self.adversary.corrupt_round(
                results,
                malicious,
                seed=task.seed,
                round_=task.round,
                attempt=task.attempt,
                dim=self.dim,
                decode=lambda reply: decode_reply(reply, self.dim, sent, self.codec),
                mask=sent,
                codec=self.codec,
            )
        yield from results

    def round_metrics(self) -> dict[str, int]:
        """The attackers among the last attempt's clients who got the model."""
        return {"num_malicious": self._malicious}

    def close(self) -> None:
        """Release the inner executor."""
        self.inner.close()
