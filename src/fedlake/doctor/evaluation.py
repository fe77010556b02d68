"""Doctor checks of evaluation and of secure aggregation's smallest sums."""

from __future__ import annotations

from fedlake.config import RunConfig
from fedlake.doctor.facts import Facts
from fedlake.doctor.finding import Finding
from fedlake.simulation.evaluation import DEFAULT_EVAL_CLIENTS

SECURE_MIN_COHORT = 3  # a sum of two updates minus one's own is the other's


HOLDOUT_SHARE = 0.1  # the share of clients the suggested holdout_clients keeps out


def check_holdout(cfg: RunConfig, facts: Facts) -> list[Finding]:
    """No held-out evaluation clients: accuracy on new clubs or users goes unmeasured."""
    fed, n = cfg.federation, facts.population
    if n is None or fed.holdout_clients or cfg.data.scenario == "remote":
        return []
    suggest = max(1, round(HOLDOUT_SHARE * n))  # n: every client, none held out yet
    return [
        Finding(
            "warning",
            "eval.holdout",
            "no held-out evaluation clients: the global model is evaluated on the test "
            "splits of clients that also train, which overstates its accuracy on a new club "
            "or a new user (docs/best-practices.md, Evaluation)",
            f"set federation.holdout_clients (e.g. {suggest} of the {n:,} clients, "
            f"{HOLDOUT_SHARE:.0%}): they never train and evaluate the model",
        )
    ]


def check_evaluation(cfg: RunConfig, facts: Facts) -> list[Finding]:
    """Findings about which clients evaluate the global model."""
    fed, n = cfg.federation, facts.population
    if n is None or fed.eval_clients is not None or n <= DEFAULT_EVAL_CLIENTS:
        return []
    stop = (
        f", and target_accuracy {fed.target_accuracy:g} stops on it" if fed.target_accuracy else ""
    )
    return [
        Finding(
            "info",
            "eval.sample",
            f"federation.eval_clients is not set: the global model is evaluated on the test "
            f"splits of a fixed sample of {DEFAULT_EVAL_CLIENTS:,} of the {n:,} clients{stop}",
            "set federation.eval_clients to choose how many clients' test splits evaluate "
            "the model",
        )
    ]


def check_secure(cfg: RunConfig, facts: Facts) -> list[Finding]:
    """Secure aggregation over cohorts too small to hide anyone's update."""
    m = facts.cohort
    if not cfg.federation.secure_aggregation or m is None or m >= SECURE_MIN_COHORT:
        return []
    return [
        Finding(
            "error",
            "secure.cohort",
            f"secure aggregation over {m} client{'s' if m > 1 else ''} a round: "
            + (
                "the revealed sum, less a client's own update, is the other's update"
                if m == 2
                else "the revealed sum of one update is that update"
            ),
            f"sample at least {SECURE_MIN_COHORT} clients per round (federation.clients_per_round)",
        )
    ]
