"""A plan as Markdown: headings, tables and the config to paste, for stdout or a file."""

from __future__ import annotations

from collections.abc import Sequence

from fedlake.guidance.advice import advise, driver_gb, risks, toml_snippet
from fedlake.guidance.plan import Plan

__all__ = ["render", "size"]


def size(n: float) -> str:
    """Bytes in the unit that keeps three significant digits readable (B, kB, MB, GB, TB)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    right = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _inputs(plan: Plan) -> list[str]:
    x = plan.inputs
    model = f"{x.model} ({x.params:,} weights)" if x.model else f"{x.params:,} weights"
    target = f"epsilon {x.epsilon:g} at delta {x.delta:g}" if x.epsilon is not None else "none"
    return [
        f"- scenario: {x.scenario}",
        f"- clients: {x.clients:,}, {x.per_round:,} per round, {x.rounds:,} rounds",
        f"- model: {model}",
        f"- privacy target: {target}",
        f"- link: {x.link_mbps:g} Mbit/s",
    ]


def _traffic(plan: Plan) -> list[str]:
    x, base = plan.inputs, plan.traffic[0]
    rows = [
        [
            t.chain.name,
            f"{t.upload_bytes:,}",
            f"{t.download_bytes:,}",
            f"{base.upload_bytes / t.upload_bytes:.1f}x",
            size(t.client_bytes * x.per_round),
            size(t.client_bytes * x.per_round * x.rounds),
            f"{t.seconds(x.link_mbps):.3g}",
        ]
        for t in plan.traffic
    ]
    header = ["compression", "up bytes / client", "down bytes / client", "uplink x",
              "per round", "whole run", "s / client round"]  # fmt: skip
    return _table(header, rows)


def _privacy(plan: Plan) -> list[str]:
    p, x = plan.privacy, plan.inputs
    if p is None:
        return ["No epsilon target: no noise planned (give `--epsilon` for one)."]
    per_coordinate = p.noise_multiplier / x.per_round
    lines = [
        f"Central DP-FedAvg, Poisson sampling (rate {x.per_round / x.clients:.3g}), "
        f"accountant {p.accountant}:",
        "",
        f"- noise multiplier z (std / clip): **{p.noise_multiplier:.4g}**",
        f"- noise std / clip per averaged coordinate (z / m): {per_coordinate:.4g}",
        "",
    ]
    rows = [[f"{t:,}", f"{eps:.4g}"] for t, eps in p.curve]
    return lines + _table(["rounds", "epsilon"], rows)


def _cluster(plan: Plan) -> list[str]:
    rows = [[m.detail, size(m.bytes), f"{driver_gb(m.bytes)} GB"] for m in plan.memory]
    lines = _table(["aggregation (round_memory)", "round memory", "driver"], rows)
    mean, worst = plan.memory[0], plan.memory[1]
    return lines + [
        "",
        f"- Spark with `fold = true` (linear rules): the driver holds {size(mean.bytes)} "
        f"whatever the cohort (driver: {driver_gb(mean.bytes)} GB).",
        f"- A server job without `fold`: replies that arrive before an earlier cohort member's "
        f"wait decoded, up to every update at once ({size(worst.bytes)}; driver: "
        f"{driver_gb(worst.bytes)} GB).",
        f"- Each executor core: the model ({size(plan.model_bytes)}) a few times, plus one "
        "client's data.",
        "- Driver sizes hold twice the round and the process (~0.3 GB in docs/results.md's "
        "scale runs); sizing rules: docs/databricks.md, Cluster sizing for a cohort.",
    ]


def render(plan: Plan) -> str:
    """The whole plan as one Markdown document."""
    advice = advise(plan)
    out = ["# fedlake plan", "", *_inputs(plan), "", "## Recommended algorithm and settings", ""]
    out += [f"- {reason}" for reason in advice.reasons]
    out += ["", "```toml", toml_snippet(plan, advice), "```", ""]
    out += ["## Traffic per client and per round (measured with fedlake's codecs)", ""]
    out += _traffic(plan)
    out += ["", "## Privacy", "", *_privacy(plan), "", "## Server cluster size", ""]
    out += _cluster(plan)
    out += ["", "## Risks", ""]
    out += [f"- {risk}" for risk in risks(plan)]
    return "\n".join(out) + "\n"
