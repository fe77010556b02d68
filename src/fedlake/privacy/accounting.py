"""Epsilon from the privacy ledger: pure functions over ``dp_accounting``'s accountants.

Nothing here accounts by hand: entries become ``dp_accounting`` events and the PLD
accountant (Meiser & Mohammadi, CCS 2018; Doroshenko et al., PETS 2022) or the RDP
accountant (Mironov, CSF 2017; Mironov, Talwar & Zhang 2019) turns them into epsilon.
Identical entries are grouped into one self-composed event, so a 1,000-round ledger
costs about what one round does.

Noise multipliers follow the ledger: std divided by the L2 sensitivity under the
entry's relation. ``dp_accounting``'s PLD accountant reads a replace-one Gaussian as
std over the per-record bound, which moves the output by twice that, so replace-one
entries are given to it at twice the ledger's multiplier. Fixed-size samples are
accounted by RDP only (Wang, Balle & Kasiviswanathan, AISTATS 2019), Poisson samples
under replace-one by PLD only; the accountant actually used is part of the result.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import dp_accounting
from dp_accounting import rdp
from dp_accounting.pld import privacy_loss_distribution

from fedlake.privacy.ledger import Ledger, LedgerEntry

Accountant = Literal["pld", "rdp"]
Conversion = Literal["improved", "classic"]
ACCOUNTANTS: tuple[str, ...] = ("pld", "rdp")
CONVERSIONS: tuple[str, ...] = ("improved", "classic")

# The PLD accountant's loss grid, chosen per ledger (see _pld_epsilon): the grid interval
# is the root-mean-square standard deviation of one step's privacy loss over
# PLD_STEPS_PER_SD. Its discretisation is pessimistic (epsilon stays an upper bound) and
# its error goes as the square of interval / sd, whatever q, z and the number of steps;
# measured against dp_accounting's PLD on a grid 5x finer (itself within ~0.01% of the
# limit: halving that grid moved epsilon by < 0.035%), over q 1e-4..1, z 0.5..8, 1 to
# 10,000 steps, delta 1e-5, epsilon 0.01..10: at most +0.19% (tests/privacy/
# test_accounting_precision.py checks +1% on such a grid). The fixed 1e-3 grid used
# before was up to +1100% (q 1e-4, z 8, 1,000 steps: 0.0076 for 0.00062), +124% at
# q 1e-4, z 1 and +5% at q 1e-2, z 8; a fixed grid cannot fit losses whose scale runs
# from ~1e-5 (q 1e-4, z 8) to ~1 (q 1, z 1).
PLD_STEPS_PER_SD = 8
# Noise beyond the truncation of each step's Gaussian is counted as infinite loss (so
# it adds to delta): at most PLD_TAIL_SHARE of delta over the whole ledger, instead of
# the library's fixed e^-50 a step, which only widens the grid (5x at q 1e-4, z 1).
PLD_TAIL_SHARE = 1e-4

_GroupKey = tuple[float, str, float, str, int, int]


@dataclass(frozen=True)
class PrivacySpent:
    """Epsilon at ``delta``, the accountant that computed it and whose guarantee it is.

    ``scope`` is ``user`` (one guarantee for every user) or ``per-client`` (each client
    its own; ``epsilon`` is the worst, that of ``worst_client``); ``clients`` counts the
    clients with a per-client guarantee (0 for ``user``).
    """

    epsilon: float
    delta: float
    accountant: str
    scope: str = "user"
    worst_client: str | None = None
    clients: int = 0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_delta(delta: float) -> None:
    _require(0 < delta < 1, f"delta must be in (0, 1), got {delta}")


def _check_choice(name: str, value: str, accepted: tuple[str, ...]) -> None:
    _require(value in accepted, f"{name} must be one of {accepted}, got {value!r}")


def _key(e: LedgerEntry) -> _GroupKey:
    """What makes two entries the same mechanism (all but round, steps, clients, source)."""
    return (e.noise_multiplier, e.sampling, e.sampling_rate, e.relation, e.population,
            e.sample_size)  # fmt: skip


def _groups(entries: Iterable[LedgerEntry]) -> dict[_GroupKey, int]:
    """Total steps per distinct mechanism, in a stable order."""
    steps: Counter[_GroupKey] = Counter()
    for e in entries:
        steps[_key(e)] += e.steps
    return dict(sorted(steps.items()))


def _resolve(groups: dict[_GroupKey, int], requested: str) -> str:
    """The accountant that supports every group (``requested`` when it does)."""
    relations = {k[3] for k in groups}
    _require(len(relations) < 2, f"entries mix neighbouring relations {sorted(relations)}")
    fixed = any(k[1] == "fixed" for k in groups)
    _require(
        not fixed or relations == {"replace_one"},
        "a fixed-size sample is accounted under relation 'replace_one' only",
    )
    poisson_replace = any(k[1] == "poisson" and k[3] == "replace_one" for k in groups)
    _require(
        not (fixed and poisson_replace),
        "no accountant handles fixed-size and Poisson samples under replace_one together",
    )
    if fixed:
        return "rdp"  # dp_accounting's PLD has no sampling-without-replacement event
    if poisson_replace:
        return "pld"  # its RDP accountant has no replace-one Poisson-sampled Gaussian
    return requested


def _event(key: _GroupKey, count: int, accountant: str) -> dp_accounting.DpEvent:
    z, sampling, q, relation, population, sample_size = key
    if accountant == "pld" and relation == "replace_one":
        z = 2 * z  # PLD's replace-one Gaussian shifts by +-1 noise unit: sensitivity 2
    base: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
    if sampling == "poisson":
        base = dp_accounting.PoissonSampledDpEvent(q, base)
    elif sampling == "fixed":
        base = dp_accounting.SampledWithoutReplacementDpEvent(population, sample_size, base)
    return base if count == 1 else dp_accounting.SelfComposedDpEvent(base, count)


def _events(groups: dict[_GroupKey, int], accountant: str) -> dp_accounting.DpEvent:
    events = [_event(k, n, accountant) for k, n in groups.items()]
    if not events:
        return dp_accounting.NoOpDpEvent()
    return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)


def dp_event(
    entries: Sequence[LedgerEntry], *, accountant: Accountant = "pld"
) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of ``entries`` for the accountant that will account it.

    Identical mechanisms are grouped into one ``SelfComposedDpEvent`` of their total
    steps. ``accountant`` is the one asked for; the event is built for the one actually
    used (see the module docstring). Raises ValueError for mixed relations.
    """
    _check_choice("accountant", accountant, ACCOUNTANTS)
    groups = _groups(entries)
    return _events(groups, _resolve(groups, accountant))


def _relation(groups: dict[_GroupKey, int]) -> dp_accounting.NeighboringRelation:
    if any(k[3] == "replace_one" for k in groups):
        return dp_accounting.NeighboringRelation.REPLACE_ONE
    return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def _loss_variance(key: _GroupKey) -> float:
    """Variance of one step's privacy loss, estimated by its Renyi divergence of order 2.

    A Gaussian privacy loss N(m, 2m) has D_2 = 2m, its variance; a Poisson-sampled
    Gaussian's D_2 is log(1 + q^2 (e^(1/z^2) - 1)) (Mironov, Talwar & Zhang 2019), the
    ledger's z for either relation. Only the PLD grid's scale is taken from it.
    """
    z, sampling, q = key[0], key[1], key[2]
    q = 1.0 if sampling == "none" else q
    a = z**-2
    return math.log1p(q * q * math.expm1(a)) if a < 700 else 2 * math.log(q) + a


@lru_cache(maxsize=16)
def _gaussian_pld(
    std: float,
    sampling_prob: float,
    relation: dp_accounting.NeighboringRelation,
    interval: float,
    log_tail: float,
) -> privacy_loss_distribution.PrivacyLossDistribution:
    """One (Poisson-sampled) Gaussian's PLD, as PLDAccountant builds it; cached per round."""
    return privacy_loss_distribution.from_gaussian_mechanism(
        std,
        value_discretization_interval=interval,
        log_mass_truncation_bound=log_tail,
        sampling_prob=sampling_prob,
        neighboring_relation=relation,
    )


def _pld_epsilon(groups: dict[_GroupKey, int], delta: float) -> float:
    """PLD epsilon of ``groups`` on a grid scaled to their privacy loss (see PLD_STEPS_PER_SD).

    dp_accounting's PLDAccountant, unrolled: the same PLDs composed the same way, with
    the grid and tail truncation chosen here, and each step's PLD cached, so that a run
    accounting after every round builds it once.
    """
    steps = sum(groups.values())
    sd = math.sqrt(sum(n * _loss_variance(k) for k, n in groups.items()) / steps)
    interval = sd / PLD_STEPS_PER_SD
    log_tail = float(math.floor(math.log(PLD_TAIL_SHARE * delta / steps)))
    relation = _relation(groups)
    total: privacy_loss_distribution.PrivacyLossDistribution | None = None
    for key, n in groups.items():
        z, sampling, q = key[0], key[1], key[2]
        if relation == dp_accounting.NeighboringRelation.REPLACE_ONE:
            z = 2 * z  # PLD's replace-one Gaussian shifts by +-1 noise unit: sensitivity 2
        if sampling == "none":  # n Gaussians are one at z / sqrt(n), as PLDAccountant has it
            one = _gaussian_pld(z / math.sqrt(n), 1.0, relation, interval, log_tail)
        else:
            one = _gaussian_pld(z, q, relation, interval, log_tail).self_compose(n)
        total = one if total is None else total.compose(one)
    assert total is not None  # groups is not empty
    return float(total.get_epsilon_for_delta(delta))


def _classic_epsilon(accountant: rdp.RdpAccountant, delta: float) -> float:
    """min over orders of rdp(a) + log(1/delta) / (a - 1) (Mironov, CSF 2017, Prop. 3)."""
    # the accountant exposes its RDP curve only through these attributes
    orders, curve = accountant._orders, accountant._rdp
    eps = min(r + math.log(1 / delta) / (a - 1) for a, r in zip(orders, curve, strict=True))
    return max(0.0, float(eps))


def _analytic_epsilon(groups: dict[_GroupKey, int], delta: float) -> float:
    """Exact epsilon of Gaussian mechanisms without sampling (local DP's releases).

    Composing Gaussians of multipliers z_i is one Gaussian of multiplier
    (sum_i 1 / z_i^2)^(-1/2), exactly (its privacy loss distribution is the same);
    ``dp_accounting``'s analytic Gaussian (Balle & Wang, ICML 2018) then gives the
    epsilon the PLD accountant converges to, without discretising: PLD is very slow at
    the tiny multipliers local DP composes to.
    """
    z = sum(n / k[0] ** 2 for k, n in groups.items()) ** -0.5
    return float(dp_accounting.get_epsilon_gaussian(z, delta))


def _epsilon_of_groups(
    groups: dict[_GroupKey, int],
    delta: float,
    accountant: str,
    conversion: str,
    orders: Sequence[float] | None,
) -> tuple[float, str]:
    used = _resolve(groups, accountant)
    if not groups:
        return 0.0, used
    if used == "pld" and conversion == "improved" and all(k[1] == "none" for k in groups):
        return _analytic_epsilon(groups, delta), "pld"
    if used == "pld":
        return _pld_epsilon(groups, delta), used
    acc = rdp.RdpAccountant(orders=orders, neighboring_relation=_relation(groups))
    acc.compose(_events(groups, used))
    if conversion == "classic":
        return _classic_epsilon(acc, delta), used
    return float(acc.get_epsilon(delta)), used


def epsilon(
    entries: Sequence[LedgerEntry],
    delta: float,
    *,
    accountant: Accountant = "pld",
    conversion: Conversion = "improved",
    orders: Sequence[float] | None = None,
) -> PrivacySpent:
    """Epsilon at ``delta`` of all ``entries`` composed (one scope, one relation).

    ``conversion`` picks the RDP-to-(epsilon, delta) step of the RDP accountant:
    ``improved`` (Balle et al., AISTATS 2020, dp_accounting's default) or ``classic``
    (Mironov 2017, what TF Privacy's tutorials report). ``orders`` are the RDP orders
    (default: dp_accounting's). Empty ``entries`` spend nothing.
    """
    _check_delta(delta)
    _check_choice("accountant", accountant, ACCOUNTANTS)
    _check_choice("conversion", conversion, CONVERSIONS)
    _require(
        conversion == "improved" or accountant == "rdp",
        "conversion 'classic' is a step of accountant 'rdp', got 'pld'",
    )
    scopes = {e.per_client for e in entries}
    _require(len(scopes) < 2, "entries mix user-level and per-client guarantees")
    groups = _groups(entries)
    eps, used = _epsilon_of_groups(groups, delta, accountant, conversion, orders)
    if scopes == {True}:
        n = len({c for e in entries for c in e.clients})
        return PrivacySpent(eps, delta, used, scope="per-client", clients=n)
    return PrivacySpent(eps, delta, used)


def ledger_epsilon(ledger: Ledger, delta: float, *, accountant: Accountant = "pld") -> PrivacySpent:
    """The run's guarantee: user-level entries composed, or the worst client's.

    Per-client entries are composed per client (the entries listing it); clients with
    the same history are accounted once. A ledger with both scopes is refused.
    """
    _check_delta(delta)
    _check_choice("accountant", accountant, ACCOUNTANTS)
    user = [e for e in ledger if not e.per_client]
    _require(
        not user or len(user) == len(ledger),
        "the ledger mixes user-level and per-client entries; a run uses one mechanism family",
    )
    if len(user) == len(ledger):
        return epsilon(user, delta, accountant=accountant)
    # entries touching the same clients first, so a long ledger is one pass per client set
    by_clients: dict[tuple[str, ...], Counter[_GroupKey]] = defaultdict(Counter)
    for e in ledger:
        by_clients[e.clients][_key(e)] += e.steps
    history: dict[str, Counter[_GroupKey]] = defaultdict(Counter)
    for clients, steps in by_clients.items():
        for c in set(clients):
            history[c].update(steps)
    cohorts: dict[tuple[tuple[_GroupKey, int], ...], list[str]] = defaultdict(list)
    for c, steps in history.items():
        cohorts[tuple(sorted(steps.items()))].append(c)
    worst: tuple[float, str, str] | None = None
    for signature, members in cohorts.items():
        eps, used = _epsilon_of_groups(dict(signature), delta, accountant, "improved", None)
        who = min(members)
        if worst is None or eps > worst[0] or (eps == worst[0] and who < worst[1]):
            worst = (eps, who, used)
    assert worst is not None  # the ledger has per-client entries
    return PrivacySpent(
        worst[0], delta, worst[2], scope="per-client", worst_client=worst[1], clients=len(history)
    )
