"""What a plan recommends and warns about: rules over its numbers, each citing where in
README.md or docs/ the rule was measured.

Pure functions of a :class:`~fedlake.guidance.plan.Plan`; the thresholds are fedlake's
rules of thumb, named here so the Markdown can say which one fired.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedlake.guidance.plan import Chain, Plan, Stages, Traffic

__all__ = [
    "DRIVER_SIZES_GB",
    "NOISY_COORDINATE",
    "PROCESS_BYTES",
    "SLOW_ROUND_S",
    "Advice",
    "advise",
    "driver_gb",
    "risks",
    "toml_snippet",
]

# docs/results.md (differential privacy): z / m of 0.08 kept digits at 81.6% (epsilon 3),
# 0.21 collapsed it to 28.5% (epsilon 1)
NOISY_COORDINATE = 0.1
SLOW_ROUND_S = 60.0  # a client's float32 round on its link past a minute: compress
PROCESS_BYTES = 310_000_000  # docs/results.md (scale): the driver's own peak, 227-306 MB
DRIVER_SIZES_GB = (8, 16, 32, 64, 128, 256, 512, 1024)
FEW_PER_ROUND = 10


@dataclass(frozen=True)
class Advice:
    """The recommended recipe, its compression setting and why."""

    algorithm: str  # [algorithm] name
    options: tuple[tuple[str, str], ...]  # extra [algorithm] keys, TOML values
    chain: Traffic  # the recommended compression, as measured
    reasons: tuple[str, ...]


def driver_gb(round_bytes: int) -> int:
    """The smallest usual driver size holding twice the round and the process itself
    (docs/databricks.md's worked example: a 4.15 GB round fits a 16 GB driver)."""
    need = 2 * (round_bytes + PROCESS_BYTES)
    return next((gb for gb in DRIVER_SIZES_GB if gb * 1e9 >= need), DRIVER_SIZES_GB[-1])


def _traffic(plan: Plan, name: str) -> Traffic:
    return next(t for t in plan.traffic if t.chain.name == name)


def slow_link(plan: Plan) -> bool:
    """Whether a client's float32 round takes longer than :data:`SLOW_ROUND_S` on the link."""
    return plan.traffic[0].seconds(plan.inputs.link_mbps) > SLOW_ROUND_S


def advise(plan: Plan) -> Advice:
    """The recipe and compression the scenario and numbers call for (README's rules)."""
    x = plan.inputs
    slow = slow_link(plan)
    reasons: list[str] = []
    options: tuple[tuple[str, str], ...] = ()
    if x.scenario == "cross-silo":
        algorithm = "fedavg"
        reasons.append(
            "cross-silo: start with FedAvg's weighted mean; with heterogeneous silos add "
            'FedProx (`name = "fedprox"`, `mu = 0.01`) (README, Non-IID data)'
        )
        if x.per_round == x.clients and x.epsilon is None:
            reasons.append(
                "every silo takes part every round: try `scaffold` too (README); it is "
                "refused with central DP"
            )
        reasons.append(
            "when the hub must not see single updates, add `[secure_aggregation]` "
            '(docs/secure-aggregation.md); with a DP target use `mechanism = "distributed"`'
        )
        chain = _traffic(plan, "2-bit up, 8-bit down" if slow else "8-bit both ways")
    else:
        algorithm, options = "fedavgm", (("momentum", "0.9"),)
        reasons.append(
            "cross-device: small cohorts of a large population: FedAvg with server momentum "
            "(README, Non-IID data); `fedadam` or `fedyogi` with server_lr 0.01-0.1 for many rounds"
        )
        if x.epsilon is None:
            reasons.append(
                "uneven devices: `[fedbuff]` reached 75% 8.6x sooner than synchronous FedAvg "
                "with over-selection (docs/results.md, FedBuff)"
            )
        chain = _traffic(plan, "2-bit up, 8-bit down" if slow else "8-bit both ways")
    if x.epsilon is not None:
        reasons.append(
            "privacy target: central DP-FedAvg with Poisson sampling (the sampling the "
            "accountant amplifies); set `clip` near the typical update norm or raise "
            "`clip_lr` for short runs (docs/results.md, differential privacy)"
        )
    reasons.append(
        f"compression `{chain.chain.name}`: "
        + (
            "the link is slow, 2-bit up lost 0.33 points on activity for 14.3x fewer bytes"
            if slow
            else "8-bit both ways cost under 0.1 points on both benchmarks (docs/results.md)"
        )
    )
    return Advice(algorithm, options, chain, tuple(reasons))


def toml_snippet(plan: Plan, advice: Advice) -> str:
    """The recommended settings as config sections to paste into a run's TOML."""
    x = plan.inputs
    lines = ["[algorithm]", f'name = "{advice.algorithm}"']
    lines += [f"{key} = {value}" for key, value in advice.options]
    lines += ["", "[federation]", f"rounds = {x.rounds}", f"clients_per_round = {x.per_round}"]
    if x.epsilon is not None:
        lines += [
            "",
            "[privacy]",
            f"epsilon = {x.epsilon:g}",
            f"delta = {x.delta:g}",
            'sampling = "poisson"',
        ]
    chain: Chain = advice.chain.chain
    lines += ["", "[compression]", f"upload = {_stages(chain.upload)}"]
    lines += [f"download = {_stages(chain.download)}"]
    if chain.error_feedback:
        lines.append("error_feedback = true")
    return "\n".join(lines)


def _stages(stages: Stages) -> str:
    def value(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else repr(v).replace("'", '"')

    tables = ["{" + ", ".join(f"{k} = {value(v)}" for k, v in s.items()) + "}" for s in stages]
    return "[" + ", ".join(tables) + "]"


def risks(plan: Plan) -> list[str]:
    """The risks that apply to these inputs, most pressing first."""
    x, out = plan.inputs, []
    if plan.privacy is not None:
        per_coordinate = plan.privacy.noise_multiplier / x.per_round
        if per_coordinate > NOISY_COORDINATE:
            out.append(
                f"noise dominates: std / clip per averaged coordinate is {per_coordinate:.3g} "
                f"(> {NOISY_COORDINATE:g}); on digits 0.21 collapsed accuracy to 28.5% "
                "(docs/results.md). Take more clients per round or a larger epsilon"
            )
        if x.per_round == x.clients:
            out.append(
                "every client takes part every round: no amplification by sampling, "
                "so the noise is that of the full population"
            )
    if x.delta >= 1 / x.clients:
        out.append(
            f"delta {x.delta:g} is not below 1 / clients ({1 / x.clients:.2g}): publishing "
            "one random user's data outright would meet it"
        )
    if x.per_round < FEW_PER_ROUND:
        out.append(
            f"{x.per_round} clients per round: a noisy average, and robust rules tolerate "
            "few attackers (Krum needs n > 2f + 2)"
        )
    if slow_link(plan):
        out.append(
            f"slow link: a float32 round takes {plan.traffic[0].seconds(x.link_mbps):.0f} s "
            f"per client at {x.link_mbps:g} Mbit/s; compress (table above)"
        )
    if x.scenario == "cross-device":
        out.append(
            "stragglers and availability: a synchronous round lasts as long as its slowest "
            'device; `[fedbuff]` with DP needs `sampling = "fixed"` (no amplification)'
        )
    out.append(
        "non-IID data: FedAvg drifts towards the clients that trained most; compare "
        "FedProx (mu 0.01-1) on your own data (README, Non-IID data)"
    )
    worst = plan.memory[1]
    if driver_gb(worst.bytes) >= 64:
        out.append(
            f"a robust rule holds every update: {worst.describe()}; keep the weighted mean "
            "or fold on Spark (`fold = true`)"
        )
    return out
