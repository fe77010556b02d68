"""Local DP's reports: only the noised update leaves the device (weight 1, no metrics).

Under local DP the server is not trusted, so a client reports nothing computed from its
data but the noised update: no example count (it would weight the average), no loss,
step count or timing.
"""

from __future__ import annotations

from typing import Any

from fedlake.core.plugin import ClientPlugin, RoundContext

__all__ = ["private_reports"]


def private_reports() -> ClientPlugin:
    """Replace the reply's weight by 1 and drop its metrics."""

    def finish(ctx: RoundContext, state: Any) -> tuple[RoundContext, Any]:
        return ctx.evolve(weight=1.0, metrics={}), state

    return ClientPlugin("private_reports", finish=finish)
