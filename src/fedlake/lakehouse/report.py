"""A run's rounds as a PNG of panels and a summary table (matplotlib, Agg, no display)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedlake.compression.wire import HEADER_BYTES
from fedlake.orchestration.outcome import model_score

__all__ = [
    "attempt_rows",
    "best_row",
    "final_rounds",
    "header_note",
    "plot_rounds",
    "summary_rows",
    "traffic_factor",
]

CLIENT_BARS = (  # stacked per round; together they make up the sampled cohort
    ("num_completed", "completed", "tab:green"),
    ("num_rejected", "rejected", "tab:red"),
    ("num_failed", "failed", "tab:orange"),
    ("num_dropped", "dropped", "tab:gray"),
)


def final_rounds(rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per round, sorted: its completed attempt if any, else its last attempt."""
    best: dict[int, dict[str, Any]] = {}
    for row in rounds:
        r = int(row["round"])
        if r not in best or _rank(row) >= _rank(best[r]):  # ties: the later row (a replay) wins
            best[r] = dict(row)
    return [best[r] for r in sorted(best)]


def attempt_rows(rounds: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per (round, attempt), retried attempts included: a replayed row counts once.

    Traffic, time and client counts add up over these (every attempt cost them).
    """
    return list({(int(r["round"]), int(r.get("attempt") or 0)): r for r in rounds}.values())


def _rank(row: Mapping[str, Any]) -> tuple[bool, int]:
    return row.get("status", "completed") == "completed", int(row.get("attempt") or 0)


def best_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row of the best global model (see :func:`model_score`), or None if none was scored."""
    scored = [r for r in rows if not math.isnan(_num(r.get("eval_accuracy")))]
    if not scored:
        return None
    return max(scored, key=lambda r: model_score(_num(r["eval_accuracy"]), _loss(r)))


def _loss(row: Mapping[str, Any]) -> float:
    loss = _num(row.get("eval_loss"))
    return math.inf if math.isnan(loss) else loss


def _num(value: Any) -> float:
    """``value`` as a float; NaN for missing values, so plots show a gap."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


MAX_BARS = 60  # rounds drawn as bars in the clients panel; more are drawn as stacked areas


def _col(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [_num(row.get(key)) for row in rows]


def plot_rounds(rounds: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path:
    """Write a PNG with accuracy, losses, clients, traffic and duration per round; returns path.

    Rows use the ``rounds`` table keys (extra keys are ignored); see :func:`final_rounds`
    for how retried attempts are folded.

    Raises:
        ValueError: no rounds to plot.
    """
    from matplotlib.figure import Figure  # Figure + its own Agg canvas: no pyplot global state

    rows = final_rounds(rounds)
    if not rows:
        raise ValueError("no rounds to plot")
    x = [int(row["round"]) for row in rows]
    fig = Figure(figsize=(15, 8.5))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.91, wspace=0.18, hspace=0.22)
    fig.suptitle(f"{title}: {len(rows)} rounds", fontsize=14)
    axes = fig.subplots(2, 3, sharex=True)
    best = best_row(rows)
    _line(axes[0, 0], x, _col(rows, "eval_accuracy"), label="accuracy")
    if best is not None:
        bx, by = int(best["round"]), _num(best["eval_accuracy"])
        axes[0, 0].plot([bx], [by], marker="*", markersize=14, color="tab:orange", zorder=3)
        axes[0, 0].annotate(
            f"best {by:.3f} (round {bx})",
            (bx, by),
            textcoords="offset points",
            xytext=(-10, -18),
            ha="right",
            fontsize=9,
        )
    _line(axes[0, 1], x, _col(rows, "eval_loss"), label="loss")
    _line(axes[0, 2], x, _col(rows, "train_loss"), label="loss")
    _line(axes[1, 2], x, _col(rows, "duration_s"), label="seconds")
    for ax, name in zip(
        (axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 2]),
        ("eval accuracy", "eval loss", "train loss (mean over clients)", "round duration (s)"),
        strict=True,
    ):
        ax.set_title(name)
    ax = axes[1, 0]
    bottom = [0.0] * len(rows)
    stacks = []
    for key, label, color in CLIENT_BARS:
        values = [0.0 if math.isnan(v) else v for v in _col(rows, key)]
        if len(rows) <= MAX_BARS:
            ax.bar(x, values, bottom=bottom, width=0.8, label=label, color=color)
        stacks.append(values)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if len(rows) > MAX_BARS:  # hundreds of bars draw slowly and read no better: areas
        labels = [label for _, label, _ in CLIENT_BARS]
        colors = [color for _, _, color in CLIENT_BARS]
        ax.stackplot(x, *stacks, labels=labels, colors=colors, step="mid")
    ax.step(x, _col(rows, "num_sampled"), where="mid", color="black", lw=1, label="sampled")
    ax.set_title("clients per round")
    ax.set_ylim(
        0.0,
        max([*bottom, *[v for v in _col(rows, "num_sampled") if not math.isnan(v)], 1.0]) * 1.25,
    )
    ax.legend(fontsize=8, loc="upper center", ncols=4)
    ax = axes[1, 1]
    scale, unit = _byte_unit(max([*_col(rows, "bytes_up"), *_col(rows, "bytes_down"), 0.0]))
    for key, label in (("bytes_up", "up (clients to server)"), ("bytes_down", "down")):
        _line(ax, x, [v / scale for v in _col(rows, key)], label=label)
    ax.set_title(f"traffic per round ({unit})")
    ax.legend(fontsize=8)
    if any(not math.isnan(v) for v in _col(rows, "eval_accuracy")):
        axes[0, 0].set_ylim(0.0, 1.02)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax is not axes[0, 0] and ax is not axes[1, 0]:
            ax.set_ylim(bottom=0.0)
    for ax in axes[1]:
        ax.set_xlabel("round")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    return path


def _line(ax: Any, x: list[int], y: list[float], *, label: str) -> None:
    """Plot the recorded points only, so rounds without a value do not break the line."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if not math.isnan(b)]
    if not pts:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        return
    xs, ys = zip(*pts, strict=True)
    ax.plot(xs, ys, marker="o", markersize=3, label=label)


def _byte_unit(largest: float) -> tuple[float, str]:
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if largest >= scale:
            return scale, unit
    return 1.0, "bytes"


def _fmt_bytes(value: float) -> str:
    scale, unit = _byte_unit(value)
    return f"{value:,.0f} bytes" if scale == 1.0 else f"{value / scale:.2f} {unit}"


def _last(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    """The last recorded ``key``, naming its round when later rounds lack it."""
    for i in range(len(rows) - 1, -1, -1):
        value = _num(rows[i].get(key))
        if not math.isnan(value):
            note = "" if i == len(rows) - 1 else f" (round {int(rows[i]['round'])})"
            return f"{value:.4f}{note}"
    return "n/a"


def traffic_factor(rows: Sequence[Mapping[str, Any]], key: str, ratio: str) -> float | None:
    """Float32 bytes the traffic ``key`` stands for / bytes sent over ``rows`` (None: none)."""
    sent = f32 = 0.0
    for row in rows:
        b, r = _num(row.get(key)), _num(row.get(ratio))
        if not (math.isnan(b) or math.isnan(r)) and b > 0:
            sent, f32 = sent + b, f32 + b * r
    return f32 / sent if sent else None


def _ratio(rows: Sequence[Mapping[str, Any]], key: str, ratio: str) -> str:
    """``12.3x smaller`` over the whole run: float32 bytes the traffic stands for / bytes sent."""
    factor = traffic_factor(rows, key, ratio)
    if factor is None:
        return "n/a"
    if abs(factor - 1) < 0.05:  # float32 itself: only the messages' headers differ
        return f"{factor:.3f}x (uncompressed, headers included)"
    return f"{factor:.1f}x smaller" if factor > 1 else f"{1 / factor:.2f}x larger"


def header_note(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a tiny model's traffic exceeds float32: the fixed header is most of each upload.

    The byte counts stay honest (every header counted); this only says, when the
    ``HEADER_BYTES``-byte payload header is half or more of the mean upload message,
    that framing rather than values sets the traffic, and how many parameters the
    model has (float32 bytes the uploads stand for / messages / 4). None otherwise.
    """
    sent = f32 = messages = 0.0
    for row in rows:
        b, r = _num(row.get("bytes_up")), _num(row.get("upload_ratio"))
        if math.isnan(b) or math.isnan(r) or b <= 0:
            continue
        # the clients that uploaded: accepted or rejected updates (failed ones send nothing)
        senders = _num(row.get("num_completed")) + _num(row.get("num_rejected"))
        if math.isnan(senders) or senders <= 0:
            continue
        sent, f32, messages = sent + b, f32 + b * r, messages + senders
    if not messages:
        return None
    mean = sent / messages
    if 0.5 * mean > HEADER_BYTES:
        return None
    params = f32 / messages / 4
    return (
        f"{HEADER_BYTES} bytes of each {mean:.0f}-byte upload "
        f"({HEADER_BYTES / mean:.0%}): a ~{params:.0f}-parameter model pays mostly for framing"
    )


def summary_rows(rounds: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(label, value) rows summarising a run: accuracy, losses, traffic, time, client drop-outs."""
    rows = final_rounds(rounds)
    if not rows:
        return [("rounds run", "0")]
    best = best_row(rows)
    attempts = attempt_rows(rounds)
    durations = [d for d in _col(attempts, "duration_s") if not math.isnan(d)]
    total_s = sum(durations)

    def total(key: str) -> float:
        return sum(v for v in _col(attempts, key) if not math.isnan(v))

    spent = [r for r in rows if isinstance(r.get("epsilon"), int | float)]
    privacy = (
        [("privacy spent", f"epsilon {spent[-1]['epsilon']:.3f} at delta {spent[-1]['delta']:g}")]
        if spent
        else []
    )
    return [
        ("rounds run", str(len(rows))),
        *privacy,
        (
            "best accuracy",
            f"{_num(best['eval_accuracy']):.4f} (round {best['round']})" if best else "n/a",
        ),
        ("final accuracy", _last(rows, "eval_accuracy")),
        ("final eval loss", _last(rows, "eval_loss")),
        ("final train loss", _last(rows, "train_loss")),
        ("bytes up (total)", _fmt_bytes(total("bytes_up"))),
        ("bytes down (total)", _fmt_bytes(total("bytes_down"))),
        ("uplink vs float32", _ratio(attempts, "bytes_up", "upload_ratio")),
        ("downlink vs float32", _ratio(attempts, "bytes_down", "download_ratio")),
        *([("  headers", note)] if (note := header_note(attempts)) else []),
        ("duration (total)", f"{total_s:.2f} s"),
        ("duration (mean per round)", f"{total_s / len(rows):.2f} s" if durations else "n/a"),
        ("clients dropped (total)", f"{total('num_dropped'):.0f}"),
        ("clients failed (total)", f"{total('num_failed'):.0f}"),
        ("updates rejected (total)", f"{total('num_rejected'):.0f}"),
    ]
