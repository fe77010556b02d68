"""The privacy ledger: one immutable entry per application of a Gaussian mechanism.

The ledger lives in :class:`fedlake.core.state.ServerState` (``privacy_ledger``) and in
the checkpoint; epsilon is always computed from it by pure functions
(:mod:`fedlake.privacy.accounting`), never accumulated by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Mechanism = Literal["central", "adaptive", "local", "dpsgd", "distributed"]
Sampling = Literal["poisson", "fixed", "none"]
Relation = Literal["add_remove", "replace_one"]

MECHANISMS: tuple[str, ...] = ("central", "adaptive", "local", "dpsgd", "distributed")
SAMPLINGS: tuple[str, ...] = ("poisson", "fixed", "none")
RELATIONS: tuple[str, ...] = ("add_remove", "replace_one")


@dataclass(frozen=True)
class LedgerEntry:
    """One (possibly subsampled, possibly repeated) Gaussian mechanism.

    Attributes:
        round: the 1-based round it was applied in.
        mechanism: ``central`` (DP-FedAvg, server noise), ``adaptive`` (DP-FedAvg with
            adaptive clipping), ``local`` (clients noise their own update) or ``dpsgd``
            (sample-level DP-SGD inside one client's training) or ``distributed``
            (clients' Skellam noise shares under secure aggregation, recorded as the
            Gaussian whose RDP bounds it: see :mod:`fedlake.privacy.distributed`).
        noise_multiplier: noise std divided by the L2 sensitivity under ``relation``:
            the number the accountant uses (a fixed-size sample under replace-one has
            sensitivity 2 x clip, so this is half the configured multiplier there).
        sampling: ``poisson`` (each unit independently with ``sampling_rate``), ``fixed``
            (``sample_size`` of ``population`` without replacement) or ``none``.
        sampling_rate: q; 1.0 when ``sampling`` is ``none``.
        steps: how many times the (sampled) mechanism ran (DP-SGD: local steps).
        relation: the neighbouring relation the guarantee is stated for.
        population: N of a fixed-size sample (0 otherwise).
        sample_size: m of a fixed-size sample (0 otherwise).
        clients: ``()`` for a user-level guarantee covering everybody (central DP);
            otherwise the clients this entry touches, each with its own guarantee
            (local DP, DP-SGD).
        secure_noise: whether the noise came from a cryptographically secure source
            (False only in simulations that asked for seeded noise).
    """

    round: int
    mechanism: Mechanism
    noise_multiplier: float
    sampling: Sampling
    sampling_rate: float
    steps: int = 1
    relation: Relation = "add_remove"
    population: int = 0
    sample_size: int = 0
    clients: tuple[str, ...] = ()
    secure_noise: bool = True

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"sampling_rate must be in (0, 1], got {self.sampling_rate}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.sampling == "fixed" and not 1 <= self.sample_size <= self.population:
            raise ValueError(
                "a fixed-size sample needs 1 <= sample_size <= population, got "
                f"{self.sample_size} of {self.population}"
            )

    @property
    def per_client(self) -> bool:
        """Whether the guarantee is per client (local DP, DP-SGD) rather than for every user."""
        return bool(self.clients)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for the audit log and MLflow)."""
        out = asdict(self)
        out["clients"] = list(self.clients)
        return out


Ledger = tuple[LedgerEntry, ...]
