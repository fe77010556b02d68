"""Planning: the noise a target epsilon needs, and the epsilon planned settings spend.

Pure functions over :mod:`fedlake.privacy.accounting` (the same accountants, the same
ledger entries a run records), for the runner's calibration and `fedlake privacy`.
"""

from __future__ import annotations

import math
from typing import Literal

import dp_accounting
from scipy import optimize

from fedlake.privacy.accounting import (
    ACCOUNTANTS,
    Accountant,
    PrivacySpent,
    _check_choice,
    _check_delta,
    _epsilon_of_groups,
    _GroupKey,
    _key,
    _require,
    _resolve,
    epsilon,
)
from fedlake.privacy.ledger import LedgerEntry


def _check_rounds(rounds: int) -> None:
    _require(rounds >= 1, f"rounds must be >= 1, got {rounds}")


def noise_for_epsilon(
    target_epsilon: float,
    delta: float,
    *,
    sampling_rate: float,
    rounds: int,
    steps_per_round: int = 1,
    accountant: Accountant = "pld",
    sampling: Literal["poisson", "fixed", "none"] = "poisson",
    relation: Literal["add_remove", "replace_one"] = "add_remove",
    population: int = 0,
    sample_size: int = 0,
) -> float:
    """The smallest ledger noise multiplier whose epsilon at ``delta`` is <= the target.

    Brent's method over :func:`~fedlake.privacy.accounting.epsilon`'s accountants (the
    PLD one on its per-ledger grid), to a relative tolerance of 1e-3, on the side that
    meets the target.
    """
    _require(target_epsilon > 0, f"target_epsilon must be > 0, got {target_epsilon}")
    _check_delta(delta)
    _check_rounds(rounds)
    _require(steps_per_round >= 1, f"steps_per_round must be >= 1, got {steps_per_round}")
    _check_choice("accountant", accountant, ACCOUNTANTS)
    # the entry validates the sampling, its rate, the relation and a fixed sample's size
    template = LedgerEntry(
        round=1,
        mechanism="central",
        noise_multiplier=1.0,
        sampling=sampling,
        sampling_rate=sampling_rate,
        relation=relation,
        population=population,
        sample_size=sample_size,
    )
    total = rounds * steps_per_round

    def groups(z: float) -> dict[_GroupKey, int]:
        return {(z, *_key(template)[1:]): total}

    used = _resolve(groups(1.0), accountant)
    if used == "pld" and sampling == "none":  # exact: k Gaussians are one at z / sqrt(k)
        one = dp_accounting.get_sigma_gaussian(target_epsilon, delta)
        return float(one * math.sqrt(total)) * (1 + 1e-9)  # on the side that meets it

    def spent(z: float) -> float:
        return _epsilon_of_groups(groups(z), delta, used, "improved", None)[0]

    lo, hi = 0.5, 1.0  # bracket the root: epsilon falls as the noise grows
    while spent(hi) > target_epsilon:
        if hi > 1e6:
            raise ValueError(f"no noise multiplier up to {hi:g} meets epsilon {target_epsilon}")
        lo, hi = hi, 2 * hi
    while spent(lo) <= target_epsilon:
        if lo < 1e-3:
            return lo  # the target allows (almost) no noise
        lo, hi = lo / 2, lo
    tol = 1e-3 * lo
    z = float(optimize.brentq(lambda z: spent(z) - target_epsilon, lo, hi, xtol=tol))
    while spent(z) > target_epsilon:  # the root is within tol: step to the side that meets it
        z = min(hi, z + tol)
    return z


def central_entry(
    num_clients: int,
    clients_per_round: int,
    noise_multiplier: float,
    sampling: str,
    *,
    round_: int = 1,
    mechanism: Literal["central", "adaptive"] = "central",
    secure_noise: bool = True,
) -> LedgerEntry:
    """One round of DP-FedAvg as the ledger records it (planned, or run in ``round_``)."""
    _require(num_clients >= 1, f"num_clients must be >= 1, got {num_clients}")
    _require(
        1 <= clients_per_round <= num_clients,
        f"clients_per_round must be in [1, num_clients={num_clients}], got {clients_per_round}",
    )
    _require(noise_multiplier > 0, f"noise_multiplier must be > 0, got {noise_multiplier}")
    _check_choice("sampling", sampling, ("poisson", "fixed"))
    q = clients_per_round / num_clients
    if sampling == "poisson":
        return LedgerEntry(
            round_, mechanism, noise_multiplier, "poisson", q, secure_noise=secure_noise
        )
    return LedgerEntry(  # replace-one: one user moves a clipped sum by 2 x clip
        round_, mechanism, noise_multiplier / 2, "fixed", q, relation="replace_one",
        population=num_clients, sample_size=clients_per_round, secure_noise=secure_noise,
    )  # fmt: skip


def plan_epsilon(
    *,
    num_clients: int,
    clients_per_round: int,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    sampling: Literal["poisson", "fixed"] = "poisson",
    accountant: Accountant = "pld",
) -> PrivacySpent:
    """Epsilon of ``rounds`` rounds of DP-FedAvg (noise std = ``noise_multiplier`` x clip).

    ``poisson``: each client joins with q = m / N (add/remove one user). ``fixed``: m of
    N without replacement (replace one user, sensitivity 2 x clip, so z / 2), accounted
    by the only bound dp_accounting has for it (RDP, WBK19), which is several times
    looser than Poisson's at the same z.
    """
    _check_rounds(rounds)
    entry = central_entry(num_clients, clients_per_round, noise_multiplier, sampling)
    return epsilon([entry] * rounds, delta, accountant=accountant)


def plan_noise(
    target_epsilon: float,
    delta: float,
    *,
    num_clients: int,
    clients_per_round: int,
    rounds: int,
    sampling: Literal["poisson", "fixed"] = "poisson",
    accountant: Accountant = "pld",
) -> float:
    """The smallest DP-FedAvg noise multiplier (std / clip) meeting the target epsilon."""
    entry = central_entry(num_clients, clients_per_round, 1.0, sampling)
    z = noise_for_epsilon(
        target_epsilon,
        delta,
        sampling_rate=entry.sampling_rate,
        rounds=rounds,
        accountant=accountant,
        sampling=entry.sampling,
        relation=entry.relation,
        population=entry.population,
        sample_size=entry.sample_size,
    )
    return 2 * z if sampling == "fixed" else z
