"""Accuracy versus epsilon: central DP-FedAvg, local DP and DP-SGD on activity and digits.

Every cell is a whole federated run (seed 0, seeded noise: a reproducible simulation)
through `fedlake run`'s code path with the lakehouse off. Central and local DP take
their noise multiplier from the budget (`privacy.epsilon`, calibrated to all rounds);
DP-SGD takes a noise multiplier and reports the largest per-client epsilon it reached.
The non-private run of each scenario is the reference. Prints one table per scenario
and writes bench/results/privacy_utility.json and docs/img/privacy_utility.png.

    python bench/privacy_utility.py            # the full grid (about 20 minutes, 2 cores)
    python bench/privacy_utility.py --quick    # a smoke test: digits, 4 cells, 2 rounds
    python bench/privacy_utility.py --accounting-only   # only the accountant's timings (~1 min)
    python bench/privacy_utility.py --render bench/results/privacy_utility.json

Every run also times the accountant (ACCOUNTING): one epsilon of a whole ledger and one
calibration (the noise for a budget), PLD and RDP, on this grid's settings and on the
cross-device regime; --accounting-only does just that and merges it into --output.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "privacy_utility.json"
PLOT = ROOT / "docs" / "img" / "privacy_utility.png"
DELTA = 1e-5
LAST = 3  # accuracy: mean of the last LAST rounds

SCENARIOS: dict[str, dict[str, Any]] = {
    # cross-device: 1,000 wearable users, 100 per round (q = 0.1)
    "activity": {
        "data": {"scenario": "activity", "num_clients": 1000},
        "model": {"kind": "cnn1d"},
        "algorithm": {"client_lr": 0.2, "local_epochs": 2, "batch_size": 32},
        "federation": {"rounds": 20, "clients_per_round": 100},
    },
    # real digits over 100 clients (about 14 training images each), 50 per round
    "digits": {
        "data": {"scenario": "digits", "num_clients": 100, "partition": "iid"},
        "model": {"kind": "mlp", "hidden": [64]},
        "algorithm": {"client_lr": 0.05, "local_epochs": 2, "batch_size": 8},
        "federation": {"rounds": 30, "clients_per_round": 50},
    },
}

# (mechanism, setting): central and local take a budget, DP-SGD a noise multiplier
CELLS: list[tuple[str, float | None]] = [
    ("none", None),
    ("central", 1.0),
    ("central", 3.0),
    ("central", 8.0),
    ("central-fast", 3.0),  # adaptive clipping with clip_lr 1 instead of 0.2
    ("local", 10.0),
    ("local", 100.0),
    ("local", 1000.0),
    ("dpsgd", 1.5),
    ("dpsgd", 0.8),
]
QUICK = [("none", None), ("central", 8.0), ("local", 1000.0), ("dpsgd", 1.0)]

# Accounting calls timed: DP-FedAvg with Poisson sampling (num_clients, clients_per_round,
# rounds, the noise multiplier for one epsilon, the budget for one calibration). The first
# two are this grid's central cells (their z for budget 3); the others the cross-device
# regime of issue 14 (q = 1e-3 and 1e-4, z = 1, 2,000 rounds).
_KEYS = ("what", "num_clients", "clients_per_round", "rounds", "z", "budget")
ACCOUNTING: list[dict[str, Any]] = [
    dict(zip(_KEYS, values, strict=True))
    for values in (
        ("activity", 1000, 100, 20, 1.096, 3.0),
        ("digits", 100, 50, 30, 3.99, 3.0),
        ("cross-device", 100_000, 100, 2000, 1.0, 1.0),
        ("cross-device", 1_000_000, 100, 2000, 1.0, 0.1),
    )
]
ACCOUNTING_REPEATS = 3


def cell_config(scenario: str, mechanism: str, setting: float | None, rounds: int) -> dict:
    """The run config of one cell."""
    raw = json.loads(json.dumps(SCENARIOS[scenario]))
    raw["federation"]["rounds"] = rounds
    raw["lakehouse"] = {"delta": False, "mlflow": False}
    if mechanism == "none":
        return raw
    privacy: dict[str, Any] = {"mechanism": mechanism, "delta": DELTA, "noise": "seeded"}
    if mechanism == "central-fast":  # the clip climbs e^0.5 a round, not e^0.1
        privacy.update(mechanism="central", clip_lr=1.0)
    if mechanism == "dpsgd":
        privacy["noise_multiplier"] = setting
    else:
        privacy["epsilon"] = setting
    if mechanism == "local":
        privacy["clip"] = 0.5
    raw["privacy"] = privacy
    return raw


def run_cell(job: tuple[str, str, float | None, int, str]) -> dict[str, Any]:
    """One federated run; its accuracy, epsilon and time."""
    scenario, mechanism, setting, rounds, out = job
    from fedlake.config import parse_config
    from fedlake.run.experiment import run_experiment

    raw = cell_config(scenario, mechanism, setting, rounds)
    raw.update(name=f"{scenario}-{mechanism}-{setting}", output_dir=out)
    t0 = time.perf_counter()
    outcome = run_experiment(parse_config(raw))
    hist = [h for h in outcome.result.history if h.get("eval_accuracy") is not None]
    acc = [float(h["eval_accuracy"]) for h in hist]
    eps = hist[-1].get("epsilon") if hist else None
    return {
        "scenario": scenario,
        "mechanism": mechanism,
        "setting": setting,
        "noise_multiplier": hist[-1].get("noise_multiplier") if hist else None,
        "epsilon": eps,
        "rounds": len(hist),
        "accuracy": sum(acc[-LAST:]) / len(acc[-LAST:]) if acc else None,
        "final_accuracy": acc[-1] if acc else None,
        "stop_reason": outcome.result.stop_reason,
        "seconds": time.perf_counter() - t0,
    }


def time_accounting() -> list[dict[str, Any]]:
    """Seconds per accounting call, PLD and RDP: the epsilon of a whole ledger
    (``plan_epsilon``) and the calibration of a budget (``plan_noise``), the best of
    ACCOUNTING_REPEATS calls, each with the accountant's per-step PLD cache emptied (a
    run's first call; later rounds reuse the cached step)."""
    from fedlake.privacy import accounting
    from fedlake.privacy.calibration import plan_epsilon, plan_noise

    def best(fn: Any) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(ACCOUNTING_REPEATS):
            accounting._gaussian_pld.cache_clear()
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    rows = []
    for c in ACCOUNTING:
        sizes = {k: c[k] for k in ("num_clients", "clients_per_round", "rounds")}
        for acc in ("pld", "rdp"):
            eps_s, spent = best(
                partial(plan_epsilon, **sizes, noise_multiplier=c["z"], delta=DELTA, accountant=acc)
            )
            cal_s, z = best(partial(plan_noise, c["budget"], DELTA, **sizes, accountant=acc))
            rows.append(
                {
                    **c,
                    "q": c["clients_per_round"] / c["num_clients"],
                    "accountant": acc,
                    "epsilon": spent.epsilon,
                    "epsilon_seconds": eps_s,
                    "calibrated_z": z,
                    "calibration_seconds": cal_s,
                }
            )
            print(
                f"accounting {c['what']:12s} q {rows[-1]['q']:<6g} {c['rounds']:5d} rounds {acc}: "
                f"epsilon {spent.epsilon:.4f} in {1e3 * eps_s:.1f} ms; "
                f"z {z:.3f} for {c['budget']:g} in {1e3 * cal_s:.0f} ms",
                flush=True,
            )
    return rows


def accounting_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The accountant's timings as a Markdown table."""
    lines = [
        "| setting | q | rounds | accountant | epsilon at z (ms per call) "
        "| z for a budget (ms per calibration) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['q']:g} | {r['rounds']:,} | {r['accountant'].upper()} "
            f"| {r['epsilon']:.4g} at z = {r['z']:g} ({1e3 * r['epsilon_seconds']:.1f} ms) "
            f"| {r['calibrated_z']:.3f} for {r['budget']:g} "
            f"({1e3 * r['calibration_seconds']:.0f} ms) |"
        )
    return lines


def label(row: dict[str, Any]) -> str:
    """A cell's name in tables: ``central, eps budget 3`` / ``dpsgd, z 1``."""
    if row["mechanism"] == "none":
        return "no DP"
    if row["mechanism"] == "dpsgd":
        return f"DP-SGD, z = {row['setting']:g}"
    if row["mechanism"] == "central-fast":
        return f"central, budget {row['setting']:g}, clip_lr 1"
    return f"{row['mechanism']}, budget {row['setting']:g}"


def markdown(report: dict[str, Any]) -> str:
    """The recorded tables as Markdown."""
    lines = [
        f"delta = {report['delta']:g}; accuracy = mean of the last {LAST} rounds; seed 0; "
        f"{report['machine']}; {report['seconds'] / 60:.1f} min.",
        "",
    ]
    for scenario in SCENARIOS:
        rows = [r for r in report["rows"] if r["scenario"] == scenario]
        if not rows:
            continue
        spec = SCENARIOS[scenario]
        fed = spec["federation"]
        lines += [
            f"**{scenario}** ({spec['data']['num_clients']} clients, "
            f"{fed['clients_per_round']} per round, {rows[0]['rounds']} rounds)",
            "",
            "| setting | noise multiplier | epsilon spent | accuracy (%) | stop |",
            "|---|---:|---:|---:|---|",
        ]
        for r in rows:
            eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
            z = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
            acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
            lines.append(f"| {label(r)} | {z} | {eps} | {acc} | {r['stop_reason']} |")
        lines.append("")
    if report.get("accounting"):
        a = report["accounting_machine"]
        lines += [
            f"**Time per accounting call** (Poisson sampling, delta = {report['delta']:g}; best "
            f"of {ACCOUNTING_REPEATS}, the per-step PLD cache emptied before each; {a}):",
            "",
            *accounting_markdown(report["accounting"]),
            "",
        ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy against epsilon, one panel per scenario, one line per mechanism."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(11, 4))
    for ax, scenario in zip(axes, SCENARIOS, strict=True):
        rows = [r for r in report["rows"] if r["scenario"] == scenario]
        for r in rows:
            if r["mechanism"] == "none" and r["accuracy"] is not None:
                ax.axhline(100 * r["accuracy"], color="grey", ls="--", label="no DP")
        for mech, marker in (
            ("central", "o"),
            ("local", "s"),
            ("dpsgd", "^"),
            ("central-fast", "D"),
        ):
            pts = sorted(
                (r["epsilon"], 100 * r["accuracy"])
                for r in rows
                if r["mechanism"] == mech and r["epsilon"] and r["accuracy"] is not None
            )
            if pts:
                name = "central, clip_lr 1" if mech == "central-fast" else mech
                ax.plot(*zip(*pts, strict=True), marker=marker, label=name)
        ax.set_xscale("log")
        ax.set_xlabel(f"epsilon spent (delta = {DELTA:g}; per client for local, DP-SGD)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(scenario)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    """Run the grid (or render a recorded one)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits only, 4 cells, 2 rounds")
    ap.add_argument(
        "--render", type=Path, help="print a recorded JSON as Markdown, redraw --plot, exit"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--only", help="run only these mechanisms (comma-separated), merged into --output"
    )
    ap.add_argument(
        "--accounting-only",
        action="store_true",
        help="time only the accountant (no federated runs); merged into --output",
    )
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=PLOT)
    args = ap.parse_args()
    if args.render is not None:
        recorded = json.loads(args.render.read_text())
        print(markdown(recorded))
        plot(recorded, args.plot)
        return 0
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if args.accounting_only:
        report = json.loads(args.output.read_text()) if args.output.exists() else {"rows": []}
        report.setdefault("delta", DELTA)
        report["accounting"] = time_accounting()
        report["accounting_machine"] = machine
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print("\n".join(accounting_markdown(report["accounting"])))
        print(f"wrote {args.output}")
        return 0
    cells = QUICK if args.quick else CELLS
    only = set(args.only.split(",")) if args.only else None
    if only is not None:
        cells = [c for c in cells if c[0] in only]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedlake-dp-bench-") as out:
        scenarios = ["digits"] if args.quick else list(SCENARIOS)
        jobs = [
            (s, m, v, 2 if args.quick else SCENARIOS[s]["federation"]["rounds"], out)
            for s in scenarios
            for m, v in cells
        ]
        ctx = mp.get_context("spawn")  # delta-rs and torch dislike fork
        with ctx.Pool(args.workers) as pool:
            rows = []
            for row in pool.imap(run_cell, jobs):
                rows.append(row)
                acc = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%"
                eps = "-" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
                print(
                    f"{row['scenario']:9s} {label(row):24s} eps {eps:>8s}  acc {acc:>6s}  "
                    f"({row['seconds']:.0f} s)",
                    flush=True,
                )
    if only is not None and args.output.exists():  # keep the other mechanisms' rows
        old = json.loads(args.output.read_text())
        keep = [r for r in old["rows"] if r["mechanism"] not in only]
        order = {(s, m): i for i, (s, m) in enumerate((s, m) for s in SCENARIOS for m, _ in CELLS)}
        rows = sorted(
            keep + rows,
            key=lambda r: (order.get((r["scenario"], r["mechanism"]), 0), str(r["setting"])),
        )
    accounting = time_accounting()
    report = {
        "delta": DELTA,
        "quick": args.quick,
        "machine": machine,
        "python": sys.version.split()[0],
        "seconds": time.perf_counter() - t0,
        "scenarios": SCENARIOS,
        "rows": rows,
        "accounting": accounting,
        "accounting_machine": machine,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    plot(report, args.plot)
    print()
    print(markdown(report))
    print(f"wrote {args.output} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
