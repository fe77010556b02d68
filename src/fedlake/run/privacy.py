"""The runner's ``[privacy]`` step: resolve the settings, calibrate the noise, refuse misuse."""

from __future__ import annotations

from typing import Any

from fedlake.config import RunConfig
from fedlake.privacy.build import DPSettings, calibrate, make_plan
from fedlake.privacy.central import AdaptiveClip, dp_fedavg
from fedlake.privacy.plan import PrivacyPlan


def build_privacy(
    cfg: RunConfig, mcfg: dict[str, Any], *, population: int, cohort: int
) -> tuple[DPSettings, PrivacyPlan]:
    """The resolved DP settings (noise calibrated to the budget when not given) and plan."""
    p = cfg.privacy
    assert p is not None
    rule = cfg.algorithm.aggregator.kind
    secure = cfg.secure() is not None
    if p.mechanism == "distributed" and not secure:
        raise ValueError(
            "mechanism 'distributed' splits the noise among the clients and relies on secure "
            "aggregation to hide each client's share: set federation.secure_aggregation = "
            "true, or use mechanism 'central'"
        )
    if p.mechanism == "central" and secure:
        raise ValueError(
            "central DP adds its noise on the server to the updates it sees, and secure "
            "aggregation shows it none: use mechanism 'distributed' (each client adds a share "
            "of the noise before masking), 'local' or 'dpsgd'"
        )
    if p.mechanism == "distributed" and rule != "mean":
        raise ValueError(
            f"distributed DP sums clipped updates and divides by a fixed denominator; "
            f"aggregator {rule!r} would break that sensitivity bound: use aggregator 'mean'"
        )
    if p.mechanism == "central" and rule != "mean":
        raise ValueError(
            f"central DP (DP-FedAvg) sums clipped updates and noises the sum; aggregator "
            f"{rule!r} would break that sensitivity bound: use aggregator 'mean', or "
            "mechanism 'local' or 'dpsgd' (their noise is added before any aggregation)"
        )
    if p.mechanism == "dpsgd" and mcfg.get("kind") == "logreg":
        raise ValueError(
            "mechanism 'dpsgd' needs a torch model (model.kind 'mlp' or 'cnn1d'); with "
            "logreg use mechanism 'central' or 'local'"
        )
    z = p.noise_multiplier
    if z is None:
        assert p.epsilon is not None
        z = calibrate(
            p.mechanism,
            epsilon=p.epsilon,
            delta=p.delta,
            rounds=cfg.federation.rounds,
            sampling=p.sampling,
            population=population,
            cohort=cohort,
            accountant=p.accountant,
        )
    adaptive = None
    if p.is_adaptive:
        adaptive = AdaptiveClip(
            target_quantile=p.target_quantile, clip_lr=p.clip_lr, count_noise=p.count_noise
        )
    dp = DPSettings(
        mechanism=p.mechanism,
        noise_multiplier=z,
        clip=p.clip_norm,
        adaptive=adaptive,
        sampling=p.sampling,
        denominator=float(cohort),
        seed=cfg.seed,
        secure_noise=p.noise == "secure",
        epsilon=p.epsilon,
        delta=p.delta,
        accountant="rdp" if p.mechanism == "distributed" else p.accountant,
    )
    if dp.mechanism == "central":  # adaptive's noise split is checked here, not in a worker
        dp_fedavg(
            clip=dp.clip,
            noise_multiplier=z,
            denominator=dp.denominator,
            adaptive=adaptive,
            secure_noise=False,
        )
    return dp, make_plan(dp, population=population, cohort=cohort)


def privacy_line(dp: DPSettings, plan: PrivacyPlan) -> str:
    """One line on the run's DP: mechanism, noise, clip, budget and the noise source."""
    budget = plan.budget
    target = f"epsilon <= {budget.epsilon:g}" if budget.epsilon is not None else "no epsilon cap"
    clip = f"adaptive clip from {dp.clip:g}" if dp.adaptive is not None else f"clip {dp.clip:g}"
    line = (
        f"privacy: {plan.mechanism} DP, noise multiplier {dp.noise_multiplier:.3f}, {clip}, "
        f"{target} at delta {budget.delta:g} ({plan.accountant} accountant)"
    )
    if dp.mechanism == "distributed":
        line += (
            "; every client adds a Skellam share of the noise before masking; no "
            "amplification by sampling is claimed (the server knows each cohort)"
        )
    if not dp.secure_noise:
        line += "; noise is SEEDED (reproducible): for simulations only, not for real data"
    return line
