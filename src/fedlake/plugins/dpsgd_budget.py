"""A DP-SGD client's own privacy budget: it refuses to train past it.

Each client's cost depends on its own data size (its batch sampling rate and steps), so
the client, not the server, is the one that can tell before training whether a round
would exceed its budget. Its history of DP-SGD rounds is the plugin's state, in the
client's own store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedlake.core.algorithm import DP_BUDGET
from fedlake.core.local import LocalConfig, SampleDP
from fedlake.core.plugin import ClientPlugin, ClientRefusal, RoundContext

__all__ = [
    "BUDGET_EXHAUSTED",
    "check_budget",
    "dpsgd_budget",
    "planned_round",
    "sampling_rate",
    "spent",
    "steps_per_epoch",
]

NAME = DP_BUDGET  # the plugin's state: ((noise multiplier, q, steps), ...)
BUDGET_EXHAUSTED = "privacy budget exhausted"  # the start of a refusing client's reason

Round = tuple[float, float, int]


def sampling_rate(n: int, batch_size: int) -> float:
    """Poisson sampling rate ``q = batch_size / n``, capped at 1 (``batch_size >= n``: all rows)."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    return min(1.0, batch_size / n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Expected batches in one pass over ``n`` rows: ``round(n / batch_size)``, at least 1.

    Python's ``round`` (half to even) is the convention: n=100, batch_size=40 gives 2.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    return max(1, round(n / batch_size))


def history_of(state: Sequence[Sequence[Any]] | None) -> tuple[Round, ...]:
    """The client's DP-SGD rounds so far, from its state (lists, when read from a file)."""
    return tuple((float(z), float(q), int(s)) for z, q, s in state or ())


def planned_round(dp: SampleDP, config: LocalConfig, n: int) -> Round:
    """What one round of DP-SGD on ``n`` examples costs: (z, q, steps)."""
    q = sampling_rate(n, config.batch_size)
    return (dp.noise_multiplier, q, config.epochs * steps_per_epoch(n, config.batch_size))


def spent(dp: SampleDP, rounds: tuple[Round, ...]) -> float:
    """The client's epsilon at the budget's delta after ``rounds``."""
    from fedlake.privacy.accounting import epsilon  # lazy: dp-accounting is an extra
    from fedlake.privacy.plan import dpsgd_entry

    entries = [dpsgd_entry(i + 1, "self", z, q, steps) for i, (z, q, steps) in enumerate(rounds)]
    return epsilon(entries, dp.delta, accountant=dp.accountant).epsilon  # type: ignore[arg-type]


def check_budget(dp: SampleDP, history: tuple[Round, ...], nxt: Round) -> None:
    """Raise ClientRefusal (reason starts with BUDGET_EXHAUSTED) if ``nxt`` would exceed it."""
    if dp.epsilon is None:
        return
    after = spent(dp, (*history, nxt))
    if after > dp.epsilon:
        raise ClientRefusal(
            f"{BUDGET_EXHAUSTED}: this round would bring the client to epsilon {after:.3f} > "
            f"{dp.epsilon:g} (delta {dp.delta:g}) after {len(history)} DP-SGD rounds"
        )


def dpsgd_budget(dp: SampleDP) -> ClientPlugin:
    """Refuse a round that would bring the client past its own epsilon; keep its history."""

    def before_fit(ctx: RoundContext, state: Any) -> tuple[RoundContext, Any]:
        history = history_of(state)
        nxt = planned_round(dp, ctx.config, ctx.dataset.num_train)
        check_budget(dp, history, nxt)
        return ctx, (*history, nxt)

    return ClientPlugin(NAME, before_fit=before_fit)
