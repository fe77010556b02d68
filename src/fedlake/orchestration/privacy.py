"""The round loop's privacy duties: the budget check, the ledger, what is not published."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from fedlake.core.state import ServerState
from fedlake.core.task import ClientFailure, FailureReason
from fedlake.core.update import ClientUpdate
from fedlake.orchestration.records import ClientRecord
from fedlake.privacy.accounting import PrivacySpent
from fedlake.privacy.plan import PrivacyPlan

BUDGET_REASON = "privacy_budget"


def dp_facts(
    updates: Iterable[ClientUpdate], into: dict[str, dict[str, float]]
) -> Iterator[ClientUpdate]:
    """Pass ``updates`` through, noting each one's ``dp_*`` metrics (DP-SGD's facts)."""
    for u in updates:
        into[u.client_id] = {k: float(v) for k, v in u.metrics.items() if k.startswith("dp_")}
        yield u


def budget_refusals(failures: Sequence[ClientFailure]) -> int:
    """How many clients of a round refused to train past their own privacy budget."""
    return sum(f.reason is FailureReason.REFUSED for f in failures)


def scrub(records: Sequence[ClientRecord]) -> None:
    """Blank the per-client statistics of un-noised updates (loss, norm): not published."""
    for rec in records:
        rec.update_norm = rec.train_loss = None


def record_round(
    plan: PrivacyPlan,
    state: ServerState,
    round_: int,
    reached: list[list[str]],
    facts: dict[str, dict[str, float]],
) -> tuple[ServerState, PrivacySpent]:
    """``state`` with the completed round's ledger entries, and the spend so far.

    ``reached`` lists, per attempt of the round, the clients whose update reached the
    server (accepted or rejected): under local DP and DP-SGD each of those releases is
    charged, retried attempts included.
    """
    entries = plan.round_entries(round_, reached, facts)
    ledger = (*state.privacy_ledger, *entries)
    return replace(state, privacy_ledger=ledger), plan.spent(ledger)


def budget_message(plan: PrivacyPlan, spent: PrivacySpent, round_: int) -> str:
    """Why round ``round_`` is refused."""
    return (
        f"round {round_} would spend epsilon {spent.epsilon:.3f} > budget "
        f"{plan.budget.epsilon:g} (delta {plan.budget.delta:g}, {plan.mechanism} DP, "
        f"{spent.accountant}); stopping before it runs"
    )


def check_first_round(plan: PrivacyPlan) -> None:
    """Refuse a run whose budget the first round alone would exceed."""
    first = plan.over_budget(plan.projected((), 1))
    if first is not None:
        raise ValueError(
            f"the privacy budget is exceeded by the first round alone: epsilon "
            f"{first.epsilon:.3f} > {plan.budget.epsilon:g} at delta "
            f"{plan.budget.delta:g}; raise the noise multiplier or the budget"
        )
