"""SCAFFOLD's control variates (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh,
"SCAFFOLD: Stochastic Controlled Averaging for Federated Learning", ICML 2020), option II.

The server keeps ``c`` and ships it with the model; each client keeps its own ``c_i``
(zeros the first time), corrects every local gradient by ``c - c_i``, and uploads
``Delta c_i`` beside its delta. The server averages the ``Delta c_i`` like the deltas and
moves ``c`` by ``|S|/N`` times that mean. A client's new ``c_i`` counts only once the
server aggregated its ``Delta c_i`` (the task's acknowledgement), so ``c`` stays the mean
of the clients' control variates through retries and rejections.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlake.compression.messages import encode_delta
from fedlake.core.params import frozen
from fedlake.core.plugin import ClientPlugin, RoundContext, ServerPlugin

__all__ = ["CONTROL", "scaffold_client", "scaffold_server"]

CONTROL = "control"  # the name of c in the task's extras and of Delta c_i in replies
NAME = "scaffold"


def encode_control(c: np.ndarray) -> bytes:
    """The server control variate as it travels: little-endian float32, 4 bytes a value."""
    return np.ascontiguousarray(c, dtype="<f4").tobytes()


def decode_control(data: bytes, dim: int) -> np.ndarray:
    """Inverse of :func:`encode_control`; checks the length."""
    if len(data) != 4 * dim:
        raise ValueError(f"SCAFFOLD's control variate has {len(data)} bytes, expected {4 * dim}")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def scaffold_client() -> ClientPlugin:
    """The client side: correct gradients by ``c - c_i``, upload ``Delta c_i``, keep ``c_i``."""

    def before_fit(ctx: RoundContext, own: Any) -> tuple[RoundContext, Any]:
        data = ctx.task.extras.get(CONTROL)
        if data is None:
            raise ValueError("SCAFFOLD needs the server's control variate in the task")
        c = decode_control(data, ctx.dim)
        if own is None or np.shape(own) != c.shape:  # first round of this client
            own = np.zeros_like(c)
        return ctx.evolve(correction=c - own), (own, c)

    def on_delta(ctx: RoundContext, scratch: Any) -> tuple[RoundContext, Any]:
        own, c = scratch
        assert ctx.fit is not None and ctx.delta is not None
        # option II: c_i+ = c_i - c + (x - y_i) / (K lr), K the steps actually taken
        scale_ = np.float32(1.0 / (ctx.fit.steps * ctx.config.lr))
        new = own - c - ctx.delta * scale_
        if ctx.sent is not None:  # positions never uploaded (pruned) keep their c_i, like c
            new = np.where(ctx.sent, new, own)
        if not np.isfinite(new).all():
            raise ValueError("local training diverged: non-finite control variate")
        payload, _ = encode_delta(new - own, ctx.sent, None, ctx.encode_rng, None)
        return ctx.evolve(payloads={**ctx.payloads, CONTROL: payload}), new

    def commit(old: Any, new: Any, acknowledged: bool) -> Any:
        return new if acknowledged else old

    return ClientPlugin(NAME, before_fit=before_fit, on_delta=on_delta, commit=commit)


def scaffold_server() -> ServerPlugin:
    """The server side: ``c`` (zeros at first), shipped every round, moved by ``|S|/N`` mean."""

    def init(params: np.ndarray) -> np.ndarray:
        return frozen(np.zeros_like(params))

    def extras(c: np.ndarray) -> dict[str, bytes]:
        return {CONTROL: encode_control(c)}

    def step(
        c: np.ndarray, aggregate: Any, participation: float
    ) -> tuple[np.ndarray, dict[str, float]]:
        mean = aggregate.get(CONTROL)
        if mean is None or not 0 < participation <= 1:
            raise ValueError(
                "SCAFFOLD's server step needs the mean control delta and a participation "
                f"|S|/N in (0, 1], got {participation}"
            )
        new = frozen((c + participation * mean).astype(np.float32))
        return new, {"control_norm": float(np.linalg.norm(new))}

    return ServerPlugin(NAME, init=init, vectors=(CONTROL,), extras=extras, step=step)
