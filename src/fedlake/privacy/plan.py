"""A run's privacy plan: which mechanism, its parameters, and the budget it must respect.

The plan turns a completed round into ledger entries, projects what the next round
would cost (so the round loop can refuse it before it runs), and reports epsilon from
the ledger through :mod:`fedlake.privacy.accounting`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from fedlake.privacy.accounting import PrivacySpent, ledger_epsilon
from fedlake.privacy.calibration import central_entry
from fedlake.privacy.ledger import Ledger, LedgerEntry
from fedlake.privacy.local import local_multiplier

USER_LEVEL = ("central", "adaptive", "distributed")  # one release a round covers every user


@dataclass(frozen=True)
class Budget:
    """Target (epsilon, delta); ``epsilon`` None reports without enforcing."""

    epsilon: float | None
    delta: float

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")


@dataclass(frozen=True)
class PrivacyPlan:
    """Mechanism, noise multiplier, sampling and budget of a DP run.

    ``population`` and ``cohort`` are N and the (expected) clients per round; with
    ``sampling = "poisson"`` each client joins a round independently with rate
    ``cohort / population``.
    """

    mechanism: str  # central | adaptive | local | dpsgd | distributed
    noise_multiplier: float
    budget: Budget
    population: int
    cohort: int
    sampling: str = "poisson"  # central: poisson | fixed; local, dpsgd: none
    accountant: str = "pld"
    secure_noise: bool = True

    @property
    def poisson_clients(self) -> bool:
        """Whether rounds sample clients by Poisson sampling (central DP's default)."""
        return self.mechanism in ("central", "adaptive") and self.sampling == "poisson"

    @property
    def per_client(self) -> bool:
        """Whether clients' releases are charged one by one (local DP, DP-SGD)."""
        return self.mechanism in ("local", "dpsgd")

    @property
    def rate(self) -> float:
        """The client sampling rate q = cohort / population."""
        return self.cohort / self.population

    def server_entry(self, round_: int) -> LedgerEntry:
        """The user-level entry of one central (adaptive, distributed) release in ``round_``."""
        if self.mechanism == "distributed":  # no amplification: the server knows the cohort
            return LedgerEntry(
                round_, "distributed", self.noise_multiplier, "none", 1.0,
                secure_noise=self.secure_noise,
            )  # fmt: skip
        return central_entry(
            self.population,
            self.cohort,
            self.noise_multiplier,
            self.sampling,
            round_=round_,
            mechanism=self.mechanism,  # type: ignore[arg-type]
            secure_noise=self.secure_noise,
        )

    def round_entries(
        self, round_: int, reached: list[list[str]], metrics: dict[str, dict[str, float]]
    ) -> tuple[LedgerEntry, ...]:
        """What a completed round adds to the ledger.

        ``reached``: per attempt, the clients whose update reached the server; ``metrics``:
        the ``dp_*`` facts DP-SGD clients reported (a client without facts, e.g. a
        rejected update, is charged by its own history on the client, not here).
        """
        if self.mechanism in USER_LEVEL:
            return (self.server_entry(round_),)
        if self.mechanism == "local":
            return tuple(
                LedgerEntry(
                    round=round_,
                    mechanism="local",
                    noise_multiplier=local_multiplier(self.noise_multiplier),
                    sampling="none",
                    sampling_rate=1.0,
                    relation="replace_one",
                    clients=tuple(clients),
                    secure_noise=self.secure_noise,
                )
                for clients in reached
                if clients
            )
        return tuple(
            dpsgd_entry(
                round_,
                c,
                metrics[c]["dp_noise_multiplier"],
                metrics[c]["dp_sampling_rate"],
                int(metrics[c]["dp_steps"]),
                secure_noise=bool(metrics[c].get("dp_secure_noise", 1.0)),
            )
            for clients in reached
            for c in clients
            if c in metrics
        )

    def projected(self, ledger: Ledger, round_: int) -> Ledger:
        """The ledger after round ``round_`` at worst (for the budget check before it runs)."""
        if self.mechanism in USER_LEVEL:
            return (*ledger, self.server_entry(round_))
        if self.mechanism == "local":  # the client who took part most, once more
            counts = Counter(c for e in ledger for c in e.clients)
            worst = counts.most_common(1)[0][0] if counts else "<any client>"
            return (*ledger, *self.round_entries(round_, [[worst]], {}))
        return ledger  # DP-SGD: every client checks its own budget before it trains

    def spent(self, ledger: Ledger) -> PrivacySpent:
        """Epsilon at the budget's delta of everything in ``ledger``."""
        return ledger_epsilon(
            ledger,
            self.budget.delta,
            accountant=self.accountant,  # type: ignore[arg-type]
        )

    def over_budget(self, ledger: Ledger) -> PrivacySpent | None:
        """The spend of ``ledger`` when it exceeds the budget's epsilon, else None."""
        if self.budget.epsilon is None or not ledger:
            return None
        spent = self.spent(ledger)
        # a relative 1e-9: float round-off of a run calibrated to spend exactly the budget
        return spent if spent.epsilon > self.budget.epsilon * (1 + 1e-9) else None


def dpsgd_entry(
    round_: int,
    client_id: str,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    *,
    secure_noise: bool = True,
) -> LedgerEntry:
    """One client's DP-SGD round: Poisson-sampled batches, ``steps`` noisy steps."""
    return LedgerEntry(
        round=round_,
        mechanism="dpsgd",
        noise_multiplier=float(noise_multiplier),
        sampling="poisson",
        sampling_rate=float(sampling_rate),
        steps=int(steps),
        clients=(client_id,),
        secure_noise=secure_noise,
    )
