"""DP summaries: noise scales from their textbook definitions, seeded noise, withheld sums."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlake.data.preprocess.dp import noise_scale, noisy_summary
from fedlake.data.preprocess.pipeline import fit_pipeline
from fedlake.data.preprocess.summary import ClientSummary, merge, summarise


def _summary(categories: int = 1500) -> ClientSummary:
    """Two columns (sensitivity 2): many category counts give many noise draws per call."""
    names = np.array([f"c{j}" for j in range(categories)], dtype=object).repeat(3)
    return summarise({"c": names, "x": np.linspace(-50, 50, len(names))})


def _noise(clean: ClientSummary, noisy: ClientSummary) -> np.ndarray:
    """Every released count's noise, in one array."""
    out = []
    for a, b in zip(clean.columns, noisy.columns, strict=True):
        out.append(b.missing - a.missing)
        if a.sketch is not None and b.sketch is not None:
            out += [b.sketch.zero - a.sketch.zero]
            for m, n in (
                (a.sketch.positive, b.sketch.positive),
                (a.sketch.negative, b.sketch.negative),
            ):
                out += [n[k] - m[k] for k in m]
        else:
            out += [b.other - a.other] + [b.categories[k] - a.categories[k] for k in a.categories]
    return np.asarray(out)


@given(st.integers(1, 50), st.floats(1e-3, 100))
def test_laplace_scale_is_l1_sensitivity_over_epsilon(columns: int, epsilon: float) -> None:
    # Dwork et al. 2006: b = Delta_1 / epsilon; one row moves one count per column by 1.
    assert noise_scale(columns, epsilon=epsilon) == pytest.approx(columns / epsilon)


@given(st.integers(1, 50), st.floats(1e-3, 0.999), st.floats(1e-12, 0.5))
def test_gaussian_sigma_is_the_classical_bound(columns: int, epsilon: float, delta: float) -> None:
    # Dwork & Roth 2014, Thm A.1: sigma = Delta_2 sqrt(2 ln(1.25 / delta)) / epsilon,
    # with Delta_2 = sqrt(columns).
    sigma = math.sqrt(columns) * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    got = noise_scale(columns, epsilon=epsilon, mechanism="gaussian", delta=delta)
    assert got == pytest.approx(sigma)


@pytest.mark.parametrize(
    ("columns", "kwargs", "message"),
    [
        (0, {"epsilon": 1.0}, "columns must be >= 1, got 0"),
        (1, {"epsilon": 0.0}, "epsilon must be > 0, got 0.0"),
        (1, {"epsilon": -1.0}, "epsilon must be > 0"),
        (1, {"epsilon": float("nan")}, "epsilon must be > 0"),
        (1, {"epsilon": float("inf")}, "epsilon must be > 0"),
        (1, {"epsilon": 1.0, "mechanism": "uniform"}, r"unknown noise mechanism 'uniform'"),
        (1, {"epsilon": 0.5, "mechanism": "gaussian", "delta": 0.0}, r"delta must be in \(0, 1\)"),
        (1, {"epsilon": 0.5, "mechanism": "gaussian", "delta": 1.0}, r"delta must be in \(0, 1\)"),
        (1, {"epsilon": 1.0, "mechanism": "gaussian"}, "gaussian summary noise needs epsilon < 1"),
    ],
)
def test_noise_scale_refuses(columns: int, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        noise_scale(columns, **kwargs)


def test_unknown_mechanism_lists_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="accepted: laplace, gaussian"):
        noisy_summary(_summary(3), epsilon=1.0, rng=np.random.default_rng(0), mechanism="x")


def test_sums_are_withheld_and_the_guarantee_recorded() -> None:
    clean = _summary(1000)
    noisy = noisy_summary(clean, epsilon=0.5, rng=np.random.default_rng(0))
    assert noisy.epsilon == 0.5 and noisy.mechanism == "laplace" and noisy.clients == 1
    x = noisy.column("x")
    assert x.total is None and x.sq_dev is None
    # The same keys (category names, buckets) are released; every count moved.
    c, c0 = noisy.column("c"), clean.column("c")
    assert set(c.categories) == set(c0.categories)
    assert set(x.sketch.positive) == set(clean.column("x").sketch.positive)
    assert np.all(_noise(clean, noisy) != 0.0)
    # Means come from the noisy sketch now, still close on 3,000 rows spread over [-50, 50].
    assert x.moments()[0] == pytest.approx(0.0, abs=3.0)


def test_same_seed_same_noise_other_seed_other_noise() -> None:
    clean = _summary(20)
    a = noisy_summary(clean, epsilon=1.0, rng=np.random.default_rng(3))
    b = noisy_summary(clean, epsilon=1.0, rng=np.random.default_rng(3))
    c = noisy_summary(clean, epsilon=1.0, rng=np.random.default_rng(4))
    assert a == b and a != c


def test_noise_does_not_depend_on_the_order_counts_were_stored() -> None:
    clean = _summary(20)
    col = clean.column("c")
    shuffled = replace(col, categories=dict(reversed(list(col.categories.items()))))
    other = replace(clean, columns=(shuffled, clean.columns[1]))
    a = noisy_summary(clean, epsilon=1.0, rng=np.random.default_rng(3))
    b = noisy_summary(other, epsilon=1.0, rng=np.random.default_rng(3))
    assert dict(a.column("c").categories) == dict(b.column("c").categories)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_empirical_noise_matches_the_scale(mechanism: str) -> None:
    clean = _summary()
    epsilon = 0.8
    scale = noise_scale(2, epsilon=epsilon, mechanism=mechanism)
    noise = _noise(
        clean,
        noisy_summary(clean, epsilon=epsilon, rng=np.random.default_rng(11), mechanism=mechanism),
    )
    n = len(noise)
    assert n > 1400  # 1,000 categories sent, the sketch's buckets
    # Laplace(b): std sqrt(2) b and E|X| = b; Gaussian(sigma): std sigma, E|X| = sigma sqrt(2/pi).
    std, mad = (
        (math.sqrt(2) * scale, scale)
        if mechanism == "laplace"
        else (scale, scale * math.sqrt(2 / math.pi))
    )
    assert abs(noise.mean()) < 5 * std / math.sqrt(n)
    assert noise.std() == pytest.approx(std, rel=0.1)  # ~3.5 standard errors at n = 1,400
    assert np.abs(noise).mean() == pytest.approx(mad, rel=0.1)


def test_refuses_merged_or_already_noised_summaries() -> None:
    clean = _summary(3)
    with pytest.raises(ValueError, match="one client's own summary, before merging"):
        noisy_summary(merge([clean, clean]), epsilon=1.0, rng=np.random.default_rng(0))
    once = noisy_summary(clean, epsilon=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="before merging"):
        noisy_summary(once, epsilon=1.0, rng=np.random.default_rng(0))


def test_a_noisy_merge_still_fits_a_pipeline_close_to_the_clean_one() -> None:
    rng = np.random.default_rng(5)
    clients = [summarise({"x": rng.normal(10.0, 2.0, size=3000)}) for _ in range(3)]
    noisy = [
        noisy_summary(s, epsilon=1.0, rng=np.random.default_rng(k)) for k, s in enumerate(clients)
    ]
    clean_step = fit_pipeline(merge(clients)).columns[0]
    noisy_pipe = fit_pipeline(merge(noisy))
    step = noisy_pipe.columns[0]
    assert step.mean == pytest.approx(clean_step.mean, rel=0.02)
    assert step.scale == pytest.approx(clean_step.scale, rel=0.05)
    assert noisy_pipe.source["epsilon"] == 1.0 and noisy_pipe.source["mechanism"] == "laplace"
