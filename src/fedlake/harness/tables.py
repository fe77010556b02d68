"""The grid's results as tables: a long CSV and Markdown matrices (attack x defence)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CSV_COLUMNS = (
    "attack",
    "fraction",
    "defence",
    "status",
    "final_accuracy",
    "best_accuracy",
    "backdoor_success",
    "final_loss",
    "rounds",
    "malicious_per_round",
    "seconds",
    "reason",
)


def ordered(values: Sequence[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One line per cell."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    return path


def cell_text(row: Mapping[str, Any] | None, metric: str) -> str:
    """A cell of a Markdown matrix: a percentage, ``n/a`` or ``failed``."""
    if row is None:
        return ""
    if row.get("status") == "n/a":
        return "n/a"
    value = row.get(metric)
    if value is None:
        return "failed" if row.get("status") in ("failed", "stopped") else "-"
    return f"{100 * float(value):.1f}" + ("*" if row.get("status") == "stopped" else "")


def matrix(
    rows: Sequence[Mapping[str, Any]], fraction: float, metric: str, attacks: Sequence[str]
) -> str:
    """A Markdown table of ``metric`` (in %) for one malicious fraction."""
    defences = ordered([r["defence"] for r in rows])
    at = {(r["attack"], r["defence"]): r for r in rows if r["fraction"] == fraction}
    lines = [
        "| attack \\ defence | " + " | ".join(defences) + " |",
        "|---|" + "---:|" * len(defences),
    ]
    for attack in attacks:
        cells = [cell_text(at.get((attack, d)), metric) for d in defences]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: Sequence[Mapping[str, Any]], *, title: str) -> str:
    """Final clean accuracy per fraction; backdoor success where a backdoor was run."""
    attacks = ordered([r["attack"] for r in rows])
    parts = [f"# {title}", ""]
    for fraction in sorted({r["fraction"] for r in rows}):
        parts += [
            f"## Final clean accuracy (%), {100 * fraction:g}% of each cohort malicious",
            "",
            matrix(rows, fraction, "final_accuracy", attacks),
            "",
        ]
    backdoors = [a for a in attacks if a.startswith("backdoor")]
    if backdoors:
        if any(r["attack"] == "none" and r.get("backdoor_success") is not None for r in rows):
            backdoors = ["none", *backdoors]  # the baseline: the honest model, same trigger
        for fraction in sorted({r["fraction"] for r in rows}):
            parts += [
                f"## Backdoor success rate (%), {100 * fraction:g}% malicious "
                "(triggered test examples of other classes classified as the target; lower "
                "is better; row none: the honest model with the default trigger, the "
                "baseline)",
                "",
                matrix(rows, fraction, "backdoor_success", backdoors),
                "",
            ]
    if any(r.get("status") == "stopped" for r in rows):
        parts += [
            "*: the run stopped early (e.g. too few valid updates); its last completed "
            "round is shown.",
            "",
        ]
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        parts += ["failed cells:", ""]
        parts += [
            f"- {r['attack']} {100 * r['fraction']:g}% {r['defence']}: {r['reason']}"
            for r in failed
        ]
        parts.append("")
    unavailable = sorted({(r["defence"], r["reason"]) for r in rows if r.get("status") == "n/a"})
    if unavailable:
        parts += ["n/a: the defence's precondition does not hold at that fraction:", ""]
        parts += [f"- {d}: {reason}" for d, reason in unavailable]
        parts.append("")
    return "\n".join(parts)
