"""FedProx's synthetic experiments: FedAvg versus FedProx (mu 0 and 1) with 0/50/90% stragglers.

Reproduces the synthetic panels of Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith,
"Federated Optimization in Heterogeneous Networks", MLSys 2020 (Figure 1; Figure 2's
synthetic row is the 0% stragglers row here) with the paper's constants: multinomial
logistic regression on 60 features and 10 classes, 30 devices, 10 sampled per round
(uniformly, updates weighted by examples: the authors' code), 200 rounds, client lr 0.01,
batch 10, 20 local epochs. Stragglers do a uniformly random 1..19 of the 20 epochs.

Methods: "FedAvg" is mu = 0 with stragglers dropped (the paper's FedAvg), "FedProx mu=0"
keeps the stragglers' partial work, "FedProx mu=1" adds the proximal term. With 0%
stragglers dropping and keeping are the same run, so only FedAvg and FedProx mu=1 run
there. Datasets: Synthetic-IID, Synthetic(0,0), Synthetic(0.5,0.5), Synthetic(1,1), all
``fedprox_synthetic(..., seed=0)``; every cell runs with a few run seeds (cohorts,
stragglers, shuffles) and the tables show their mean.

Reported per run: the training loss (the global objective: cross-entropy of the global
model over all devices' training data, example-weighted) after every round, found by
running the federation one round at a time (``run(stop_after=1)``, then ``resume``; exact,
see tests/integration/test_bench_fedprox.py), and test accuracy on the devices' test
splits. Final loss = after round 200; accuracy = mean of the last 5 rounds; range = max
minus min of the training loss over the last 50 rounds (oscillation, or still descending).

    python bench/fedprox_synthetic.py            # 32 cells x 5 seeds (~5 min, 2 cores)
    python bench/fedprox_synthetic.py --quick    # a smoke test: Synthetic(1,1), 2 cells, 5 rounds
    python bench/fedprox_synthetic.py --render bench/results/fedprox_synthetic.json
"""

from __future__ import annotations

# one BLAS/OpenMP thread per process, set before numpy loads (spawned workers inherit it
# and re-run this module first): two workers on two cores, tiny matrices
import os

# one thread per worker process (the workers already fill the cores), compiled loop included
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "FEDLAKE_CLIENT_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _git import git_state  # noqa: E402  (bench/, beside this script)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fedprox_synthetic.json"
PLOT = ROOT / "docs" / "img" / "fedprox_synthetic.png"

PAPER = {  # Li et al. (MLSys 2020), section 5.1 and appendix C
    "model": "logreg",
    "num_features": 60,
    "num_classes": 10,
    "num_devices": 30,
    "clients_per_round": 10,
    "rounds": 200,
    "client_lr": 0.01,
    "batch_size": 10,
    "local_epochs": 20,
}
DATA_SEED = 0
RUN_SEEDS = (0, 1, 2, 3, 4)  # cohorts, stragglers and shuffles; the data seed is fixed
# name: (alpha, beta, iid), in order of heterogeneity
DATASETS: dict[str, tuple[float, float, bool]] = {
    "Synthetic-IID": (0.0, 0.0, True),
    "Synthetic(0,0)": (0.0, 0.0, False),
    "Synthetic(0.5,0.5)": (0.5, 0.5, False),
    "Synthetic(1,1)": (1.0, 1.0, False),
}
STRAGGLERS = (0.0, 0.5, 0.9)
# name: (mu, straggler policy)
METHODS: dict[str, tuple[float, str]] = {
    "FedAvg": (0.0, "drop"),
    "FedProx mu=0": (0.0, "keep"),
    "FedProx mu=1": (1.0, "keep"),
}
LAST_ACC = 5  # accuracy: mean of the last LAST_ACC rounds
WINDOW = 50  # oscillation: range of the training loss over the last WINDOW rounds
EVERY = 10  # curves in the JSON: every EVERY rounds
QUICK = {"dataset": "Synthetic(1,1)", "stragglers": 0.5, "rounds": 5, "local_epochs": 2}


def methods_at(stragglers: float) -> list[str]:
    """The methods run at a straggler share (dropping == keeping without stragglers)."""
    return list(METHODS) if stragglers > 0 else ["FedAvg", "FedProx mu=1"]


def data_of(dataset: str) -> Any:
    """The federated data of a dataset name (seed DATA_SEED)."""
    from fedlake.data.synthetic import fedprox_synthetic

    alpha, beta, iid = DATASETS[dataset]
    return fedprox_synthetic(alpha, beta, iid=iid, num_devices=PAPER["num_devices"], seed=DATA_SEED)


def federation(job: dict[str, Any], run_dir: Path, data: Any) -> Any:
    """The Federation of one cell (no lakehouse sinks, the vectorised inline executor)."""
    from fedlake.algorithms.fedprox import fedprox
    from fedlake.client.logreg import LogRegTrainer
    from fedlake.orchestration.sampling import CohortSpec
    from fedlake.simulation import Population, simulate

    mu, policy = METHODS[job["method"]]
    return simulate(
        recipe=functools.partial(
            fedprox,
            mu=mu,
            client_lr=PAPER["client_lr"],
            local_epochs=job["local_epochs"],
            batch_size=PAPER["batch_size"],
        ),
        trainer=LogRegTrainer(PAPER["num_features"], PAPER["num_classes"]),
        data=data,
        run_dir=run_dir,
        rounds=job["rounds"],
        cohort=CohortSpec(count=PAPER["clients_per_round"]),
        population=Population(stragglers=job["stragglers"], policy=policy),
        seed=job["seed"],
    )


def run_config(dataset: str, stragglers: float, method: str) -> dict[str, Any]:
    """The same cell as a ``fedlake run`` config (its seed also seeds the data: seed 0)."""
    alpha, beta, iid = DATASETS[dataset]
    mu, policy = METHODS[method]
    data: dict[str, Any] = {"scenario": "synthetic", "iid": iid, "num_clients": 30}
    if not iid:
        data.update(alpha=alpha, beta=beta)
    return {
        "seed": DATA_SEED,
        "data": data,
        "model": {"kind": "logreg"},
        "algorithm": {
            "name": "fedprox",
            "mu": mu,
            "client_lr": PAPER["client_lr"],
            "local_epochs": PAPER["local_epochs"],
            "batch_size": PAPER["batch_size"],
        },
        "federation": {
            "rounds": PAPER["rounds"],
            "clients_per_round": PAPER["clients_per_round"],
            "stragglers": stragglers,
            "straggler_policy": policy,
        },
        "lakehouse": {"delta": False, "mlflow": False},
    }


def trace(job: dict[str, Any], run_dir: Path) -> tuple[Any, list[float]]:
    """Run a cell one round at a time; the result and the training loss after every round
    (index 0: the initial model)."""
    import numpy as np

    data = data_of(job["dataset"])
    parts = [data.load(c) for c in data.client_ids()]
    x = np.concatenate([p.x_train for p in parts])
    y = np.concatenate([p.y_train for p in parts])
    fed = federation(job, run_dir, data)
    losses = [fed.trainer.evaluate(fed.trainer.init_params(job["seed"]), x, y)["loss"]]
    result = fed.run(stop_after=1)
    while True:
        losses.append(fed.trainer.evaluate(result.state.params, x, y)["loss"])
        if result.stop_reason != "paused":
            return result, losses
        result = fed.run(resume=True, stop_after=1)


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """One federated run: its curves and summary numbers."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedlake-fedprox-bench-") as tmp:
        result, losses = trace(job, Path(tmp) / "run")
    done = [h for h in result.history if h.get("status") == "completed"]
    acc = [float(h["eval_accuracy"]) for h in done]
    tail = losses[-WINDOW:]
    finite = all(math.isfinite(v) for v in losses)
    return {
        **job,
        "rounds_done": len(done),
        "stop_reason": result.stop_reason,
        "final_train_loss": losses[-1],
        "test_accuracy": statistics.fmean(acc[-LAST_ACC:]) if acc else None,
        "loss_range": (max(tail) - min(tail)) if finite else math.inf,
        "tail_train_loss": statistics.fmean(tail) if finite else math.inf,
        "diverged": (not finite) or losses[-1] > losses[0],
        "mean_updates_per_round": statistics.fmean(h["num_completed"] for h in done),
        "train_loss_curve": [round(v, 5) for v in losses[::EVERY]]
        + ([] if (len(losses) - 1) % EVERY == 0 else [round(losses[-1], 5)]),
        "test_accuracy_curve": [round(a, 5) for a in acc[EVERY - 1 :: EVERY]],
        "seconds": time.perf_counter() - t0,
    }


# -- summaries --------------------------------------------------------------------------
def cells(rows: list[dict[str, Any]]) -> dict[tuple[str, float, str], dict[str, Any]]:
    """Seed means per (dataset, stragglers, method)."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["stragglers"], r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {
            "seeds": [r["seed"] for r in rs],
            "final_train_loss": statistics.fmean(r["final_train_loss"] for r in rs),
            "final_train_loss_seeds": [r["final_train_loss"] for r in rs],
            "test_accuracy": statistics.fmean(r["test_accuracy"] for r in rs),
            "loss_range": statistics.fmean(r["loss_range"] for r in rs),
            "tail_train_loss": statistics.fmean(r["tail_train_loss"] for r in rs),
            "diverged": sum(bool(r["diverged"]) for r in rs),
        }
    return out


def verdicts(summary: dict[tuple[str, float, str], dict[str, Any]]) -> list[str]:
    """The paper's two qualitative findings, checked against the numbers."""

    def grade(hits: int, total: int) -> str:
        if total == 0:
            return "not measured"
        if hits == total:
            return "holds"
        return "mostly holds" if 2 * hits > total else "does not hold"

    # (1) keep partial work (FedProx mu=0) beats dropping stragglers (FedAvg)
    pairs = [
        (summary[(d, s, "FedProx mu=0")], summary[(d, s, "FedAvg")])
        for d in DATASETS
        for s in STRAGGLERS
        if s > 0 and (d, s, "FedProx mu=0") in summary and (d, s, "FedAvg") in summary
    ]
    loss_wins = sum(k["final_train_loss"] < f["final_train_loss"] for k, f in pairs)
    tail_wins = sum(k["tail_train_loss"] < f["tail_train_loss"] for k, f in pairs)
    acc_wins = sum(k["test_accuracy"] > f["test_accuracy"] for k, f in pairs)
    lines = [
        f"Finding 1 (with stragglers, keeping partial work beats dropping it): "
        f"{grade(loss_wins + tail_wins + acc_wins, 3 * len(pairs))} (all three measures "
        f"together). FedProx mu=0 beats FedAvg on the final training loss in {loss_wins} of "
        f"{len(pairs)} straggler cells, on the mean training loss of the last {WINDOW} rounds "
        f"in {tail_wins} of {len(pairs)}, and on test accuracy in {acc_wins} of {len(pairs)}."
    ]

    # (2) mu = 1 stabilises training as heterogeneity grows: compare with mu = 0 (keep;
    # FedAvg at 0% stragglers, the same run)
    def base(d: str, s: float) -> dict[str, Any] | None:
        return summary.get((d, s, "FedProx mu=0" if s > 0 else "FedAvg"))

    gains: dict[str, list[float]] = {}
    loss_hits = range_hits = total = 0
    for d in DATASETS:
        for s in STRAGGLERS:
            one, zero = summary.get((d, s, "FedProx mu=1")), base(d, s)
            if one is None or zero is None:
                continue
            gains.setdefault(d, []).append(zero["final_train_loss"] - one["final_train_loss"])
            if d == "Synthetic(1,1)":
                total += 1
                loss_hits += one["final_train_loss"] < zero["final_train_loss"]
                range_hits += one["loss_range"] < zero["loss_range"]
    mean_gain = {d: statistics.fmean(g) for d, g in gains.items()}
    order = [mean_gain[d] for d in DATASETS if d in mean_gain]
    rising = all(a <= b for a, b in zip(order, order[1:], strict=False))
    largest = max(mean_gain, key=mean_gain.__getitem__) if mean_gain else None
    trend = ", ".join(f"{d} {g:+.3f}" for d, g in mean_gain.items())
    if not mean_gain:
        return [
            *lines,
            "Finding 2 (mu=1 stabilises training as heterogeneity grows): not measured.",
        ]
    lines.append(
        f"Finding 2 (mu=1 stabilises training as heterogeneity grows): "
        f"{grade(loss_hits + range_hits, 2 * total)} on Synthetic(1,1). There mu=1 has the "
        f"lower final training loss in {loss_hits} of {total} straggler settings and the "
        f"smaller last-{WINDOW}-round loss range in {range_hits} of {total}. Mean loss "
        f"reduction by mu=1 (mu=0 minus mu=1) per dataset, least to most heterogeneous: "
        f"{trend or '-'}; {'rises' if rising else 'does not rise'} monotonically with "
        f"heterogeneity, largest on {largest}."
    )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The recorded tables and verdicts as Markdown."""
    summary = {
        (c["dataset"], c["stragglers"], c["method"]): c for c in report["cells"]
    }  # seed means
    c = report["constants"]
    seeds = sorted({r["seed"] for r in report["rows"]})
    lines = [
        f"Logistic regression, {c['num_devices']} devices, {c['clients_per_round']} per round, "
        f"{c['rounds']} rounds, lr {c['client_lr']:g}, batch {c['batch_size']}, "
        f"{c['local_epochs']} local epochs; data seed {report['data_seed']}, mean over run "
        f"seeds {seeds}. Cells: final training loss (round {c['rounds']}, all devices' "
        f"training data) / test accuracy % (mean of the last {LAST_ACC} rounds). At 0% "
        f"stragglers FedProx mu=0 is the FedAvg run (nobody to drop). "
        f"{report['machine']}; {report['seconds'] / 60:.1f} min.",
        "",
        "| dataset | stragglers | " + " | ".join(METHODS) + " |",
        "|---|---:|" + "---:|" * len(METHODS),
    ]
    range_lines = [
        "",
        f"Training loss over the last {WINDOW} rounds: mean / range (max - min: oscillation, "
        "or still descending); runs whose final loss exceeds the initial ln 10 are marked "
        "diverged:",
        "",
        "| dataset | stragglers | " + " | ".join(METHODS) + " |",
        "|---|---:|" + "---:|" * len(METHODS),
    ]
    for d in DATASETS:
        for s in STRAGGLERS:
            if not any((d, s, m) in summary for m in METHODS):
                continue
            cols, rcols = [], []
            for m in METHODS:
                cell = summary.get((d, s, m))
                if cell is None and s == 0 and m == "FedProx mu=0":
                    cols.append("= FedAvg")
                    rcols.append("= FedAvg")
                elif cell is None:
                    cols.append("-")
                    rcols.append("-")
                else:
                    cols.append(
                        f"{cell['final_train_loss']:.3f} / {100 * cell['test_accuracy']:.1f}"
                    )
                    div = f" ({cell['diverged']} diverged)" if cell["diverged"] else ""
                    tail = cell.get("tail_train_loss")
                    mean = "" if tail is None else f"{tail:.3f} / "
                    rcols.append(f"{mean}{cell['loss_range']:.3f}{div}")
            head = f"| {d} | {100 * s:.0f}% | "
            lines.append(head + " | ".join(cols) + " |")
            range_lines.append(head + " | ".join(rcols) + " |")
    lines += range_lines
    lines += ["", *(f"- {v}" for v in report["verdicts"])]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Training loss against rounds: rows = stragglers, columns = datasets (the paper's
    Figure 1 layout), one line per method (seed mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    present = [s for s in STRAGGLERS if any(r["stragglers"] == s for r in rows)]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    fig, axes = plt.subplots(
        len(present),
        len(datasets),
        figsize=(3.3 * len(datasets), 2.7 * len(present)),
        squeeze=False,
        sharex=True,
    )
    style = {"FedAvg": ("tab:blue", "-"), "FedProx mu=0": ("tab:orange", "--")}
    style["FedProx mu=1"] = ("tab:red", "-")
    every = report["curve_every"]
    for i, s in enumerate(present):
        for j, d in enumerate(datasets):
            ax = axes[i][j]
            top = 0.0
            for m in METHODS:
                curves = [
                    r["train_loss_curve"]
                    for r in rows
                    if (r["dataset"], r["stragglers"], r["method"]) == (d, s, m)
                ]
                if not curves:
                    continue
                mean = [statistics.fmean(v) for v in zip(*curves, strict=True)]
                xs = [min(k * every, report["constants"]["rounds"]) for k in range(len(mean))]
                color, ls = style[m]
                ax.plot(xs, mean, color=color, ls=ls, label=m)
                top = max(top, max(v for v in mean if math.isfinite(v)))
            ax.set_ylim(0, min(top * 1.05, 4.0))
            ax.set_title(f"{d}, {100 * s:.0f}% stragglers", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("training loss")
            if i == len(present) - 1:
                ax.set_xlabel("# rounds")
    axes[-1][0].legend(fontsize=8)  # the bottom row has every method
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def git_head() -> dict[str, Any]:
    """The commit measured and whether src/ or this script had uncommitted changes."""
    head, changed = git_state(ROOT, "src", "bench/fedprox_synthetic.py")
    return {"head": head, "uncommitted": changed}


def jobs_of(quick: bool, seeds: list[int]) -> list[dict[str, Any]]:
    """Every run of the grid (or of the smoke test)."""
    if quick:
        d, s = QUICK["dataset"], QUICK["stragglers"]
        return [
            {
                "dataset": d,
                "stragglers": s,
                "method": m,
                "seed": seeds[0],
                "rounds": QUICK["rounds"],
                "local_epochs": QUICK["local_epochs"],
            }
            for m in ("FedAvg", "FedProx mu=1")
        ]
    return [
        {
            "dataset": d,
            "stragglers": s,
            "method": m,
            "seed": seed,
            "rounds": PAPER["rounds"],
            "local_epochs": PAPER["local_epochs"],
        }
        for seed in seeds
        for d in DATASETS
        for s in STRAGGLERS
        for m in methods_at(s)
    ]


def main() -> int:
    """Run the grid (or render a recorded one)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Synthetic(1,1), 2 cells, 5 rounds")
    ap.add_argument("--seeds", type=int, default=len(RUN_SEEDS), help="run seeds 0..N-1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--render", type=Path, help="print a recorded JSON, redraw --plot, exit")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=PLOT)
    args = ap.parse_args()
    if args.render is not None:
        recorded = json.loads(args.render.read_text())
        print(markdown(recorded))
        plot(recorded, args.plot)
        return 0
    seeds = list(range(1 if args.quick else args.seeds))
    jobs = jobs_of(args.quick, seeds)
    code = git_head()  # what is measured: src/ as the workers import it now
    t0 = time.perf_counter()
    rows = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        for row in pool.imap_unordered(run_cell, jobs):
            rows.append(row)
            print(
                f"[{len(rows):3d}/{len(jobs)}] {row['dataset']:18s} "
                f"{100 * row['stragglers']:3.0f}% {row['method']:13s} seed {row['seed']}  "
                f"loss {row['final_train_loss']:.4f}  "
                f"acc {100 * row['test_accuracy']:5.1f}%  range {row['loss_range']:.4f}  "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    order = {(j["dataset"], j["stragglers"], j["method"], j["seed"]): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["dataset"], r["stragglers"], r["method"], r["seed"])])
    summary = cells(rows)
    constants = dict(PAPER)
    if args.quick:
        constants.update(rounds=QUICK["rounds"], local_epochs=QUICK["local_epochs"])
    report = {
        "paper": "Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, Federated Optimization in "
        "Heterogeneous Networks, MLSys 2020 (Figure 1, synthetic)",
        "quick": args.quick,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.workers} worker processes",
        "python": sys.version.split()[0],
        "code": code,
        "seconds": time.perf_counter() - t0,
        "constants": constants,
        "datasets": {
            d: {"alpha": a, "beta": b, "iid": iid, "seed": DATA_SEED}
            for d, (a, b, iid) in DATASETS.items()
        },
        "methods": {m: {"mu": mu, "straggler_policy": p} for m, (mu, p) in METHODS.items()},
        "data_seed": DATA_SEED,
        "run_seeds": seeds,
        "curve_every": EVERY,
        "metrics": {
            "final_train_loss": "cross-entropy of the global model after the last round over "
            "all devices' training data (example-weighted)",
            "test_accuracy": f"mean eval_accuracy of the last {LAST_ACC} rounds, all devices' "
            "test splits",
            "loss_range": f"max - min training loss over the last {WINDOW} rounds",
            "tail_train_loss": f"mean training loss over the last {WINDOW} rounds",
            "diverged": "final training loss above the initial one (ln 10) or not finite",
            "train_loss_curve": f"rounds 0, {EVERY}, {2 * EVERY}, ... (and the last)",
            "test_accuracy_curve": f"rounds {EVERY}, {2 * EVERY}, ...",
        },
        "run_config_example": run_config("Synthetic(1,1)", 0.5, "FedProx mu=1"),
        "cells": [
            {"dataset": d, "stragglers": s, "method": m, **v} for (d, s, m), v in summary.items()
        ],
        "rows": rows,
    }
    report["verdicts"] = verdicts(summary)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    plot(report, args.plot)
    print()
    print(markdown(report))
    print(f"wrote {args.output} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
