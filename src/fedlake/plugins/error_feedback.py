"""Error feedback (Stich, Cordonnier and Jaggi, "Sparsified SGD with Memory", NeurIPS 2018;
Karimireddy et al., "Error Feedback Fixes SignSGD", ICML 2019): each client adds to its
delta what compression dropped from its previous ones, and keeps what it drops now.

The residual is exactly ``delta + residual - decode(payload)`` at the positions the
upload carries (0 elsewhere: pruned weights are gone), so nothing a client computed is
lost, only delayed. It is the client's whatever the server makes of its update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlake.compression.messages import decode_delta
from fedlake.core.codec import Codec, CodecError
from fedlake.core.plugin import ClientPlugin, RoundContext
from fedlake.core.update import DELTA

__all__ = ["error_feedback"]

NAME = "error_feedback"


def error_feedback(codec: Codec | None) -> ClientPlugin:
    """Carry ``codec``'s compression error from one upload to the client's next.

    Raises:
        ValueError: ``codec`` is lossless (the residual would always be zero) or not
            contractive (its residual could grow every round).
    """
    if codec is None or codec.lossless:
        raise ValueError(
            "error_feedback needs a lossy upload codec (top-k, random-k or quantisation); "
            "with a lossless one the residual is always zero"
        )
    if not codec.contractive:
        raise ValueError(
            f"error_feedback needs a contractive upload codec and {codec.name} is "
            "not: its residual can grow every round. Use topk, random_mask with "
            "unbiased = false, nearest rounding, or stochastic quantisation with "
            "bucket < (2**bits - 1)**2; or drop error_feedback (unbiased codecs do "
            "without it)"
        )

    def before_encode(ctx: RoundContext, residual: Any) -> tuple[RoundContext, Any]:
        assert ctx.delta is not None
        if residual is None or np.shape(residual) != ctx.delta.shape:  # first round
            residual = np.zeros_like(ctx.delta, dtype=np.float32)
        corrected = (ctx.delta + residual).astype(np.float32)
        return ctx.evolve(delta=corrected), corrected

    def finish(ctx: RoundContext, corrected: Any) -> tuple[RoundContext, Any]:
        payload = ctx.payloads[DELTA]
        sent = ctx.sent
        try:
            got = decode_delta(payload, corrected.size, sent, codec)
        except CodecError as exc:  # a codec that cannot read its own output is a bug
            raise RuntimeError(f"codec {codec.name} cannot decode its own payload: {exc}") from exc
        if sent is None:
            return ctx, corrected - got
        residual = np.zeros_like(corrected, dtype=np.float32)
        residual[sent] = corrected[sent] - got[sent]
        return ctx, residual

    return ClientPlugin(NAME, before_encode=before_encode, finish=finish)
