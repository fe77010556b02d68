"""Doctor checks of ``[compression]``: settings docs/results.md measured to cost accuracy.

The thresholds come from the compression tables of docs/results.md ("Communication
efficiency"): activity's 1-D CNN of 3,093 weights and synthetic's logistic regression of
610, paired by seed against float32 FedAvg.
"""

from __future__ import annotations

from fedlake.config import RunConfig
from fedlake.doctor.facts import Facts
from fedlake.doctor.finding import Finding

RESULTS = "docs/results.md, Communication efficiency"
# top-k below this ratio lost points on models this small: top-1% + EF kept 31 of 3,093
# weights (-4.05 points on activity) and 6 of 610 (-7.48 on synthetic); top-5% + EF
# -1.24 and +0.29. Pruning half of such models cost 1.5 and 4.5 points.
TOPK_MIN_RATIO = 0.05
SMALL_MODEL = 10_000  # the measured models' order of size (610 and 3,093 weights)
STRUCTURED_MIN_RATIO = 0.1  # structured 10%: -20.97 points on activity in 40 rounds


def check_compression(cfg: RunConfig, facts: Facts) -> list[Finding]:
    """Findings about the upload chain and pruning of ``cfg`` at its model size."""
    c = cfg.compression
    d = facts.model_size
    findings: list[Finding] = []
    for stage in c.upload:
        if stage.kind == "topk":
            findings += _topk(stage.ratio, d, c.error_feedback)
        elif stage.kind == "random_mask":
            findings += _random_mask(c.error_feedback)
        elif stage.kind == "structured_mask" and stage.ratio <= STRUCTURED_MIN_RATIO:
            findings.append(
                Finding(
                    "warning",
                    "compression.structured",
                    f"structured_mask ratio {stage.ratio:g}: clients train {stage.ratio:.0%} "
                    f"of the weights a round, which lost 20.97 points on activity in 40 "
                    f"rounds at 10% ({RESULTS})",
                    "use quantize (4 or 8 bits) for the same bytes, or a larger ratio and "
                    "more rounds",
                )
            )
        elif stage.kind == "quantize" and stage.bits <= 2:
            findings.append(_low_bits(stage.bits))
    if c.prune is not None and d is not None and c.prune.sparsity >= 0.5 and d <= SMALL_MODEL:
        findings.append(
            Finding(
                "warning",
                "compression.prune",
                f"pruning {c.prune.sparsity:.0%} of a model of {d:,} weights: pruning half of "
                f"models of 3,093 and 610 weights cost 1.5 and 4.5 points ({RESULTS}); "
                "pruning pays on models with slack",
                "drop [compression.prune] and use quantize (8 bits both ways was free)",
            )
        )
    return findings


def _topk(ratio: float, d: int | None, error_feedback: bool) -> list[Finding]:
    out = []
    if d is not None and ratio < TOPK_MIN_RATIO and d <= SMALL_MODEL:
        out.append(
            Finding(
                "warning",
                "compression.topk",
                f"topk ratio {ratio:g} keeps about {round(ratio * d)} of the model's {d:,} "
                f"weights a round; top-1% lost 4.05 points (31 of 3,093 weights) and 7.48 "
                f"(6 of 610), top-5% lost at most 1.24 ({RESULTS})",
                f"use ratio >= {TOPK_MIN_RATIO:g}, or quantize (4 bits lost < 0.3 points on "
                "both models)",
            )
        )
    if not error_feedback:
        out.append(
            Finding(
                "warning",
                "compression.error_feedback",
                "topk without error_feedback drops the small entries for good: top-5% lost "
                f"3.72 points on synthetic without it and none with it ({RESULTS})",
                "set compression.error_feedback = true",
            )
        )
    return out


def _random_mask(error_feedback: bool) -> list[Finding]:
    if error_feedback:
        return [
            Finding(
                "warning",
                "compression.random_mask",
                "random_mask with error_feedback under partial participation: a client's "
                "residual is rounds old when next sent; random-10% + EF lost 28.29 points "
                f"on activity ({RESULTS})",
                "set compression.error_feedback = false (random-10% unbiased lost 2.13), or "
                "use topk with error feedback",
            )
        ]
    return [
        Finding(
            "info",
            "compression.random_mask",
            "random_mask: random-10% (unbiased) lost 2.13 points on activity and 8.86 on "
            f"synthetic, more than top-k or quantisation at the same bytes ({RESULTS})",
            "use topk with error_feedback, or quantize",
        )
    ]


def _low_bits(bits: int) -> Finding:
    lost = "14.60" if bits == 1 else "1.49"
    return Finding(
        "warning" if bits == 1 else "info",
        "compression.quantize",
        f"quantize with {bits} bit{'s' if bits > 1 else ''}: free on activity, but "
        f"{lost} points lost on synthetic (20 local epochs of drift) ({RESULTS})",
        "use bits = 4 or 8 (within 0.4 points on both), or measure on your own data first",
    )
