"""Epsilon from the ledger, checked against published numbers and independent accountants."""

import math

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant
from scipy import optimize, stats

from fedlake.privacy.accounting import (
    PrivacySpent,
    dp_event,
    epsilon,
    ledger_epsilon,
)
from fedlake.privacy.calibration import noise_for_epsilon, plan_epsilon
from fedlake.privacy.ledger import LedgerEntry

# TF Privacy's orders (its MNIST tutorial and compute_dp_sgd_privacy)
TF_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))
DP_ACCOUNTING_ORDERS = dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS


def poisson(z, q, steps=1, **kw):
    return LedgerEntry(round=1, mechanism="central", noise_multiplier=z, sampling="poisson",
                       sampling_rate=q, steps=steps, **kw)  # fmt: skip


def gaussian(z, relation="add_remove", **kw):
    return LedgerEntry(round=1, mechanism="local", noise_multiplier=z, sampling="none",
                       sampling_rate=1.0, relation=relation, **kw)  # fmt: skip


# (a) TF Privacy's MNIST DP-SGD tutorial: batch 256 of 60,000, 60 epochs, delta 1e-5,
# "epsilon 2.92 for noise 1.12" and "3.01 for noise 1.1" (classic RDP conversion)
@pytest.mark.parametrize(("z", "published"), [(1.12, 2.92), (1.1, 3.01)])
def test_tf_privacy_mnist_tutorial(z, published):
    steps = math.ceil(60 * 60000 / 256)
    entry = LedgerEntry(1, "dpsgd", z, "poisson", 256 / 60000, steps=steps)
    classic = epsilon([entry], 1e-5, accountant="rdp", conversion="classic", orders=TF_ORDERS)
    assert classic.epsilon == pytest.approx(published, rel=0.01)
    assert classic.accountant == "rdp"
    # the improved conversion and PLD are tighter than the published classic number
    improved = epsilon([entry], 1e-5, accountant="rdp", orders=TF_ORDERS).epsilon
    assert improved < classic.epsilon
    assert epsilon([entry], 1e-5).epsilon < improved


# (b) FL scale: 100 of 763,430 users per round against Opacus' own accountants.
# Measured: RDP equals Opacus' RDP to ~1e-6 relative (same orders, same conversion);
# PLD is 0.03% below PRV's upper bound at eps_error 1e-3 (epsilons 3.7, 4.4, 6.1).
N_USERS, COHORT = 763_430, 100


@pytest.mark.parametrize(
    ("z", "rounds", "delta"), [(0.45, 1000, 1e-7), (0.4, 1000, 1e-6), (0.35, 300, 1e-6)]
)
def test_fl_scale_against_opacus(z, rounds, delta):
    q = COHORT / N_USERS
    kw = {"num_clients": N_USERS, "clients_per_round": COHORT, "noise_multiplier": z}
    ours_rdp = plan_epsilon(rounds=rounds, delta=delta, accountant="rdp", **kw)
    ours_pld = plan_epsilon(rounds=rounds, delta=delta, **kw)
    opacus_rdp = RDPAccountant()
    opacus_prv = PRVAccountant()
    for _ in range(rounds):
        opacus_rdp.step(noise_multiplier=z, sample_rate=q)
        opacus_prv.step(noise_multiplier=z, sample_rate=q)
    rdp_ref = opacus_rdp.get_epsilon(delta, alphas=list(DP_ACCOUNTING_ORDERS))
    prv_ref = opacus_prv.get_epsilon(delta, eps_error=1e-3)
    assert ours_rdp.accountant == "rdp" and ours_pld.accountant == "pld"
    assert ours_rdp.epsilon == pytest.approx(rdp_ref, rel=1e-4)
    assert ours_pld.epsilon == pytest.approx(prv_ref, rel=0.01)
    assert ours_pld.epsilon < ours_rdp.epsilon  # PLD is the tighter of the two


# (c) one Gaussian release against the analytic Gaussian mechanism (Balle & Wang, ICML 2018)
def analytic_gaussian_epsilon(z, delta):
    def delta_at(eps):
        return stats.norm.cdf(1 / (2 * z) - eps * z) - math.exp(eps) * stats.norm.cdf(
            -1 / (2 * z) - eps * z
        )

    return optimize.brentq(lambda eps: delta_at(eps) - delta, 0.0, 100.0, xtol=1e-12)


@pytest.mark.parametrize("z", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-8])
def test_single_gaussian_matches_the_analytic_gaussian_mechanism(z, delta):
    exact = analytic_gaussian_epsilon(z, delta)
    assert epsilon([gaussian(z)], delta).epsilon == pytest.approx(exact, rel=0.01)
    # the ledger's replace-one multiplier is already per replace-one sensitivity
    assert epsilon([gaussian(z, "replace_one")], delta).epsilon == pytest.approx(exact, rel=0.01)
    assert epsilon([gaussian(z)], delta, accountant="rdp").epsilon >= exact


def test_fixed_sample_of_everybody_is_a_gaussian_at_half_the_noise():
    # m = N: no amplification; replace-one moves the clipped sum by 2 clip, so the RDP
    # curve is T a / (2 (z/2)^2) (Mironov 2017), converted as Balle et al. 2020, Prop. 12
    z, rounds, delta = 4.0, 10, 1e-5
    spent = plan_epsilon(num_clients=50, clients_per_round=50, noise_multiplier=z,
                         rounds=rounds, delta=delta, sampling="fixed")  # fmt: skip
    expected = min(
        rounds * a / (2 * (z / 2) ** 2) + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        for a in DP_ACCOUNTING_ORDERS
    )
    assert spent.accountant == "rdp"  # PLD has no sampling-without-replacement event
    assert spent.epsilon == pytest.approx(expected, rel=1e-9)


# (d) properties
fast = settings(max_examples=10, deadline=None)
noises = st.floats(0.6, 4.0)
rates = st.floats(1e-3, 0.3)
accountants = st.sampled_from(["pld", "rdp"])


def spend(z, q, rounds, accountant):
    return epsilon([poisson(z, q)] * rounds, 1e-5, accountant=accountant).epsilon


def at_most(a, b):
    """a <= b up to floating-point noise (q and q + 1 ulp give epsilons 1e-16 apart)."""
    return a <= b * (1 + 1e-9) + 1e-12


@fast
@given(noises, rates, st.integers(1, 200), st.integers(0, 200), accountants)
def test_epsilon_grows_with_rounds(z, q, rounds, more, accountant):
    assert at_most(spend(z, q, rounds, accountant), spend(z, q, rounds + more, accountant))


@fast
@given(noises, rates, rates, st.integers(1, 100), accountants)
def test_epsilon_grows_with_the_sampling_rate(z, q1, q2, rounds, accountant):
    lo, hi = sorted((q1, q2))
    assert at_most(spend(z, lo, rounds, accountant), spend(z, hi, rounds, accountant))


@fast
@given(noises, noises, rates, st.integers(1, 100), accountants)
def test_epsilon_falls_with_the_noise(z1, z2, q, rounds, accountant):
    lo, hi = sorted((z1, z2))
    assert at_most(spend(hi, q, rounds, accountant), spend(lo, q, rounds, accountant))


# (e) grouping, scopes, the worst client
def test_identical_entries_are_one_self_composed_event():
    entries = [poisson(1.1, 0.01)] * 300
    expected = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 300
    )
    assert dp_event(entries) == expected
    assert epsilon(entries, 1e-5) == epsilon([poisson(1.1, 0.01, steps=300)], 1e-5)
    direct = dp_accounting.rdp.RdpAccountant().compose(expected).get_epsilon(1e-5)
    assert epsilon(entries, 1e-5, accountant="rdp").epsilon == pytest.approx(direct, rel=1e-12)


def test_distinct_mechanisms_compose():
    a, b = poisson(1.0, 0.01, steps=100), poisson(2.0, 0.05, steps=50)
    both = epsilon([a, b, a], 1e-5).epsilon
    assert both > max(epsilon([a, a], 1e-5).epsilon, epsilon([b], 1e-5).epsilon)
    assert isinstance(dp_event([a, b]), dp_accounting.ComposedDpEvent)


def test_empty_ledger_spends_nothing():
    assert ledger_epsilon((), 1e-5) == PrivacySpent(0.0, 1e-5, "pld")
    assert epsilon([], 1e-5, accountant="rdp").epsilon == 0.0


def test_per_client_guarantee_is_the_worst_clients():
    ledger = (
        gaussian(4.0, "replace_one", clients=("a", "b", "c")),
        gaussian(4.0, "replace_one", clients=("b", "c")),
        gaussian(4.0, "replace_one", clients=("c", "b")),
        gaussian(4.0, "replace_one", clients=("d",)),
    )
    spent = ledger_epsilon(ledger, 1e-5)
    three = epsilon([gaussian(4.0, "replace_one", clients=("x",))] * 3, 1e-5).epsilon
    assert spent.scope == "per-client" and spent.clients == 4
    assert spent.worst_client == "b"  # b and c tie with three releases; the first name
    assert spent.epsilon == pytest.approx(three, rel=1e-12)
    assert spent.epsilon > ledger_epsilon(ledger[:1], 1e-5).epsilon


def test_many_clients_with_one_history_are_accounted_once():
    clients = tuple(f"c{i:06d}" for i in range(100_000))
    ledger = tuple(
        LedgerEntry(r, "dpsgd", 1.0, "poisson", 0.01, steps=10, clients=clients)
        for r in range(1, 51)
    )
    spent = ledger_epsilon(ledger, 1e-5)
    one = epsilon([poisson(1.0, 0.01, steps=500, clients=("x",))], 1e-5).epsilon
    assert spent.clients == 100_000 and spent.worst_client == "c000000"
    assert spent.epsilon == pytest.approx(one, rel=1e-12)


def test_mixed_scopes_and_relations_are_refused():
    user, local = poisson(1.0, 0.1), gaussian(2.0, "replace_one", clients=("a",))
    with pytest.raises(ValueError, match="mixes user-level and per-client"):
        ledger_epsilon((user, local), 1e-5)
    with pytest.raises(ValueError, match="mix user-level and per-client"):
        epsilon([user, local], 1e-5)
    with pytest.raises(ValueError, match="mix neighbouring relations"):
        epsilon([user, gaussian(2.0, "replace_one")], 1e-5)
    fixed_add_remove = LedgerEntry(1, "central", 1.0, "fixed", 0.1, population=10, sample_size=1)
    with pytest.raises(ValueError, match="'replace_one' only"):
        epsilon([fixed_add_remove], 1e-5)


def test_pld_is_replaced_by_rdp_for_fixed_samples_and_back_for_replace_one_poisson():
    fixed = LedgerEntry(1, "central", 1.0, "fixed", 0.1, relation="replace_one",
                        population=100, sample_size=10)  # fmt: skip
    assert epsilon([fixed], 1e-5).accountant == "rdp"
    replace_poisson = poisson(1.0, 0.1, relation="replace_one")
    assert epsilon([replace_poisson], 1e-5, accountant="rdp").accountant == "pld"
    with pytest.raises(ValueError, match="no accountant handles"):
        epsilon([fixed, replace_poisson], 1e-5)


# (f) calibration
@pytest.mark.parametrize(
    ("target", "q", "rounds", "accountant"),
    [(2.0, 0.01, 500, "pld"), (1.0, COHORT / N_USERS, 2000, "pld"), (8.0, 0.1, 100, "rdp")],
)
def test_noise_for_epsilon_round_trips(target, q, rounds, accountant):
    z = noise_for_epsilon(target, 1e-6, sampling_rate=q, rounds=rounds, accountant=accountant)
    assert spend_at(z, q, rounds, accountant) <= target
    assert spend_at(z / 1.002, q, rounds, accountant) > target  # the smallest, to 1e-3


def spend_at(z, q, rounds, accountant):
    return epsilon([poisson(z, q, steps=rounds)], 1e-6, accountant=accountant).epsilon


def test_noise_for_epsilon_of_local_and_fixed_releases():
    z = noise_for_epsilon(3.0, 1e-5, sampling_rate=1.0, rounds=50, sampling="none",
                          relation="replace_one")  # fmt: skip
    assert epsilon([gaussian(z, "replace_one", steps=50)], 1e-5).epsilon <= 3.0
    assert epsilon([gaussian(z / 1.002, "replace_one", steps=50)], 1e-5).epsilon > 3.0
    assert analytic_gaussian_epsilon(z / math.sqrt(50), 1e-5) == pytest.approx(3.0, rel=0.01)
    fixed = {"sampling": "fixed", "relation": "replace_one", "population": 1000,
             "sample_size": 100}  # fmt: skip
    z = noise_for_epsilon(4.0, 1e-5, sampling_rate=0.1, rounds=20, **fixed)
    entry = LedgerEntry(1, "central", z, sampling_rate=0.1, steps=20, **fixed)
    assert 0.99 * 4.0 < epsilon([entry], 1e-5).epsilon <= 4.0


# (g) bad input
PLAN = {"num_clients": 10, "clients_per_round": 1, "noise_multiplier": 1.0, "rounds": 1,
        "delta": 1e-5}  # fmt: skip
CALIBRATE = {"target_epsilon": 1.0, "delta": 1e-5, "sampling_rate": 0.1, "rounds": 1}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: epsilon([poisson(1.0, 0.1)], 0.0), r"delta must be in \(0, 1\), got 0.0"),
        (lambda: epsilon([poisson(1.0, 0.1)], 1.0), r"delta must be in \(0, 1\), got 1.0"),
        (
            lambda: epsilon([], 1e-5, accountant="gdp"),
            r"accountant must be one of \('pld', 'rdp'\), got 'gdp'",
        ),
        (
            lambda: epsilon([], 1e-5, conversion="classic"),
            "conversion 'classic' is a step of accountant 'rdp', got 'pld'",
        ),
        (lambda: poisson(0.0, 0.1), "noise_multiplier must be > 0, got 0.0"),
        (lambda: poisson(1.0, 1.5), r"sampling_rate must be in \(0, 1\], got 1.5"),
        (
            lambda: noise_for_epsilon(**{**CALIBRATE, "target_epsilon": 0.0}),
            "target_epsilon must be > 0, got 0.0",
        ),
        (
            lambda: noise_for_epsilon(**{**CALIBRATE, "sampling_rate": 0.0}),
            r"sampling_rate must be in \(0, 1\], got 0.0",
        ),
        (lambda: noise_for_epsilon(**{**CALIBRATE, "rounds": 0}), "rounds must be >= 1, got 0"),
        (
            lambda: noise_for_epsilon(**{**CALIBRATE, "delta": 2.0}),
            r"delta must be in \(0, 1\), got 2.0",
        ),
        (
            lambda: plan_epsilon(**{**PLAN, "clients_per_round": 11}),
            r"clients_per_round must be in \[1, num_clients=10\], got 11",
        ),
        (
            lambda: plan_epsilon(**{**PLAN, "noise_multiplier": -1.0}),
            "noise_multiplier must be > 0, got -1.0",
        ),
        (lambda: plan_epsilon(**{**PLAN, "rounds": 0}), "rounds must be >= 1, got 0"),
        (lambda: plan_epsilon(**{**PLAN, "num_clients": 0}), "num_clients must be >= 1, got 0"),
        (
            lambda: plan_epsilon(**{**PLAN, "sampling": "none"}),
            r"sampling must be one of \('poisson', 'fixed'\), got 'none'",
        ),
    ],
)
def test_bad_input_names_the_value_and_the_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()
