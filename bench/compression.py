"""Accuracy versus bytes for every compression method, and codec throughput.

Runs the activity (1-D CNN, cross-device) and FedProx Synthetic(1,1) (logistic
regression) scenarios with float32 FedAvg and with each compression method, same
seeds and cohorts, and prints one table per scenario: accuracy, total bytes up and
down (the encoded payloads' real sizes) and the ratio against float32 FedAvg measured
in the same run. Then encode/decode throughput of each codec on a 10^6-value vector.

    python bench/compression.py            # everything (about 10 minutes on 2 cores)
    python bench/compression.py --quick    # fewer rounds and methods, a smoke test

Writes bench/results/compression.json and docs/img/compression.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from fedlake.compression.codec import plain  # noqa: E402
from fedlake.compression.pipeline import codec_from_stages  # noqa: E402
from fedlake.config import parse_config  # noqa: E402
from fedlake.run.experiment import run_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "compression.json"
PLOT = ROOT / "docs" / "img" / "compression.png"

Q8 = {"kind": "quantize", "bits": 8}
NEAREST8 = {"kind": "quantize", "bits": 8, "stochastic": False}


def q(bits: int) -> dict[str, Any]:
    return {"kind": "quantize", "bits": bits}


def topk(ratio: float) -> dict[str, Any]:
    return {"kind": "topk", "ratio": ratio}


# name -> [compression] section. Every method runs with the same seed, so the same
# cohorts and dropouts: differences come from compression alone.
METHODS: dict[str, dict[str, Any]] = {
    "float32 (FedAvg)": {},
    "float16": {"upload": [{"kind": "float16"}]},
    "8-bit nearest": {"upload": [NEAREST8]},
    "8-bit stochastic": {"upload": [Q8]},
    "4-bit stochastic": {"upload": [q(4)]},
    "2-bit stochastic": {"upload": [q(2)]},
    "1-bit stochastic": {"upload": [q(1)]},
    "top-10% + EF": {"upload": [topk(0.1)], "error_feedback": True},
    "top-5% + EF": {"upload": [topk(0.05)], "error_feedback": True},
    "top-1% + EF": {"upload": [topk(0.01)], "error_feedback": True},
    "top-5% no EF": {"upload": [topk(0.05)]},
    "top-5% 8-bit + EF": {"upload": [topk(0.05), Q8], "error_feedback": True},
    "random-10% unbiased": {"upload": [{"kind": "random_mask", "ratio": 0.1}]},
    "random-10% + EF": {
        "upload": [{"kind": "random_mask", "ratio": 0.1, "unbiased": False}],
        "error_feedback": True,
    },
    "structured 10%": {"upload": [{"kind": "structured_mask", "ratio": 0.1}]},
    "prune 50%": {"prune": {"sparsity": 0.5, "start_round": 5, "end_round": 15}},
    "prune 50%, 8-bit both ways": {
        "upload": [Q8],
        "download": [NEAREST8],
        "prune": {"sparsity": 0.5, "start_round": 5, "end_round": 15},
    },
    "8-bit both ways": {"upload": [Q8], "download": [NEAREST8]},
}
QUICK = ["float32 (FedAvg)", "2-bit stochastic", "top-5% + EF", "prune 50%", "8-bit both ways"]

SCENARIOS: dict[str, dict[str, Any]] = {
    # the default example (make run), for a fixed number of rounds
    "activity": {
        "data": {"scenario": "activity", "num_clients": 100},
        "model": {"kind": "cnn1d"},
        "algorithm": {"client_lr": 0.2, "local_epochs": 5, "batch_size": 32},
        "federation": {"rounds": 40, "clients_per_round": 15, "min_clients": 5, "dropout": 0.1},
    },
    # FedProx's Synthetic(1,1) with the paper's constants (Li et al., MLSys 2020)
    "synthetic": {
        "data": {"scenario": "synthetic", "alpha": 1.0, "beta": 1.0, "num_clients": 30},
        "model": {"kind": "logreg"},
        "algorithm": {"client_lr": 0.01, "local_epochs": 20, "batch_size": 10},
        "federation": {"rounds": 100, "clients_per_round": 10},
    },
}
ZOOM = 10  # plot points within this many points of float32 FedAvg; list the rest
LAST = 5  # accuracy is reported as the mean of the last LAST rounds (single rounds are noisy)


def run_method(scenario: str, method: str, rounds: int, out: Path, seed: int) -> dict[str, Any]:
    """One federated run; returns its accuracy and traffic."""
    raw = json.loads(json.dumps(SCENARIOS[scenario]))
    raw["federation"]["rounds"] = rounds
    raw.update(
        name=f"{scenario}-{len(list(out.iterdir()))}",
        seed=seed,
        output_dir=str(out),
        compression=METHODS[method],
        lakehouse={"delta": False, "mlflow": False},
    )
    t0 = time.perf_counter()
    outcome = run_experiment(parse_config(raw))
    seconds = time.perf_counter() - t0
    hist = [h for h in outcome.result.history if h.get("eval_accuracy") is not None]
    acc = [float(h["eval_accuracy"]) for h in hist]
    up = sum(int(h["bytes_up"]) for h in hist)
    down = sum(int(h["bytes_down"]) for h in hist)
    f32_up = sum(int(h["bytes_up"]) * float(h["upload_ratio"]) for h in hist if h["bytes_up"])
    f32_down = sum(int(h["bytes_down"]) * float(h["download_ratio"]) for h in hist)
    return {
        "scenario": scenario,
        "method": method,
        "compression": METHODS[method],
        "rounds": len(hist),
        "accuracy": float(np.mean(acc[-LAST:])),
        "final_accuracy": acc[-1],
        "best_accuracy": max(acc),
        "final_train_loss": hist[-1]["train_loss"],
        "bytes_up": up,
        "bytes_down": down,
        "up_vs_float32": f32_up / up,
        "down_vs_float32": f32_down / down,
        "seconds": seconds,
    }


def throughput(dim: int, repeats: int) -> list[dict[str, Any]]:
    """Encode and decode speed of every codec on one ``dim``-value vector (MB/s of float32)."""
    rng = np.random.default_rng(0)
    vec = rng.standard_normal(dim).astype(np.float32)
    chains = {
        "float32": [],
        "float16": [{"kind": "float16"}],
        "8-bit nearest": [NEAREST8],
        "8-bit stochastic": [Q8],
        "4-bit stochastic": [q(4)],
        "2-bit stochastic": [q(2)],
        "1-bit stochastic": [q(1)],
        "top-1%": [topk(0.01)],
        "top-5% 8-bit": [topk(0.05), Q8],
        "random-10%": [{"kind": "random_mask", "ratio": 0.1}],
    }
    rows = []
    for name, chain in chains.items():
        codec = codec_from_stages(chain) or plain()
        enc, dec = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            payload = codec.encode(vec, rng)
            t1 = time.perf_counter()
            codec.decode(payload, dim)
            t2 = time.perf_counter()
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        mb = vec.nbytes / 1e6
        rows.append(
            {
                "codec": name,
                "dim": dim,
                "bytes": len(payload),
                "ratio": vec.nbytes / len(payload),
                "encode_MBps": mb / min(enc),
                "decode_MBps": mb / min(dec),
            }
        )
    return rows


def summarise(per_seed: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per method: means over seeds, and the accuracy change against float32 FedAvg
    paired by seed (same seed, same cohorts and dropouts), as mean and standard deviation."""
    base = per_seed["float32 (FedAvg)"]
    rows = []
    for runs in per_seed.values():
        acc = np.array([r["accuracy"] for r in runs])
        diff = 100 * (acc - np.array([b["accuracy"] for b in base]))
        rows.append(
            {
                **{k: runs[0][k] for k in ("scenario", "method", "compression", "rounds")},
                "seeds": len(runs),
                "accuracy": float(acc.mean()),
                "accuracy_sd": float(acc.std(ddof=1)) if len(runs) > 1 else 0.0,
                "points_vs_float32": float(diff.mean()),
                "points_vs_float32_sd": float(diff.std(ddof=1)) if len(runs) > 1 else 0.0,
                "bytes_up": float(np.mean([r["bytes_up"] for r in runs])),
                "bytes_down": float(np.mean([r["bytes_down"] for r in runs])),
                "up_vs_float32": float(np.mean([r["up_vs_float32"] for r in runs])),
                "down_vs_float32": float(np.mean([r["down_vs_float32"] for r in runs])),
                "seconds": float(np.sum([r["seconds"] for r in runs])),
                "runs": runs,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], scenario: str) -> None:
    """One scenario's methods, with ratios against float32 FedAvg from the same run."""
    base = next(r for r in rows if r["method"] == "float32 (FedAvg)")
    print(
        f"\n{scenario}: accuracy = mean of the last {LAST} of {base['rounds']} rounds, "
        f"averaged over {base['seeds']} seeds; change vs float32 paired by seed (mean +- sd)"
    )
    head = f"{'method':<28}{'accuracy':>9}{'points vs f32':>16}{'up bytes':>12}{'up x':>7}"
    head += f"{'down x':>8}{'time x':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        change = f"{r['points_vs_float32']:+.2f} +- {r['points_vs_float32_sd']:.2f}"
        print(
            f"{r['method']:<28}{r['accuracy']:>9.4f}{change:>16}{r['bytes_up']:>12,.0f}"
            f"{base['bytes_up'] / r['bytes_up']:>7.1f}{base['bytes_down'] / r['bytes_down']:>8.1f}"
            f"{r['seconds'] / base['seconds']:>8.2f}"
        )


def markdown(report: dict[str, Any]) -> str:
    """The recorded JSON as Markdown tables (for docs/results.md)."""
    out = []
    for scenario, rows in report["runs"].items():
        base = next(r for r in rows if r["method"] == "float32 (FedAvg)")
        out += [
            f"**{scenario}** ({base['rounds']} rounds, {base['seeds']} seeds; accuracy is the "
            f"mean of the last {LAST} rounds, the change is paired by seed)",
            "",
            "| method | accuracy | points vs float32 (mean +- sd) | uplink bytes per run "
            "| uplink x | downlink x | time x |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            out.append(
                f"| {r['method']} | {100 * r['accuracy']:.2f}% "
                f"| {r['points_vs_float32']:+.2f} +- {r['points_vs_float32_sd']:.2f} "
                f"| {r['bytes_up']:,.0f} | {base['bytes_up'] / r['bytes_up']:.1f} "
                f"| {base['bytes_down'] / r['bytes_down']:.1f} "
                f"| {r['seconds'] / base['seconds']:.2f} |"
            )
        out.append("")
    out += [
        "| codec (10^6 values) | bytes | ratio | encode MB/s | decode MB/s |",
        "|---|---|---|---|---|",
    ]
    for t in report["throughput"]:
        out.append(
            f"| {t['codec']} | {t['bytes']:,} | {t['ratio']:.1f} | {t['encode_MBps']:.0f} "
            f"| {t['decode_MBps']:.0f} |"
        )
    return "\n".join(out)


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Accuracy against total uplink bytes (log scale), one panel per scenario.

    Each method has its own marker and colour, named in one legend; methods more than
    ZOOM points below float32 FedAvg are listed under their panel instead of stretching
    the axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for rows in results.values() for r in rows))
    colours = plt.get_cmap("tab20").colors
    markers = "os^vD<>Ph*Xd"
    style = {
        m: {"color": colours[i % len(colours)], "marker": markers[i % len(markers)]}
        for i, m in enumerate(methods)
    }
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results) + 3, 5.5))
    for ax, (scenario, rows) in zip(np.atleast_1d(axes), results.items(), strict=True):
        base = next(r for r in rows if r["method"] == "float32 (FedAvg)")
        floor = 100 * base["accuracy"] - ZOOM
        off = []
        for r in rows:
            acc = 100 * r["accuracy"]
            if acc < floor:
                off.append(f"{r['method']}: {acc:.1f}%")
                continue
            ax.scatter(r["bytes_up"], acc, s=45, label=r["method"], **style[r["method"]])
        ax.axhline(100 * base["accuracy"] - 1, color="grey", lw=0.8, ls="--")
        ax.axvline(base["bytes_up"] / 10, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        below = f"\nbelow the axis: {'; '.join(off)}" if off else ""
        ax.set_xlabel(f"total uplink bytes per run (encoded payloads){below}", fontsize=9)
        ax.set_ylabel(f"test accuracy, % (mean of last {LAST} rounds, {base['seeds']} seeds)")
        ax.set_title(
            f"{scenario}  (dashed: float32 - 1 point; dotted: 10x fewer bytes)", fontsize=9
        )
    handles = [plt.Line2D([], [], ls="", markersize=7, label=m, **style[m]) for m in methods]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    """Run the benchmark; exit 1 when the activity target is missed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few methods and rounds (smoke test)")
    ap.add_argument(
        "--seeds", type=int, nargs="+", help="seeds to average over (default 0 1 2; quick: 0)"
    )
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=PLOT)
    ap.add_argument(
        "--render", type=Path, help="from a recorded JSON: redraw the plot, print Markdown, exit"
    )
    args = ap.parse_args()
    if args.render is not None:
        report = json.loads(args.render.read_text())
        plot(report["runs"], args.plot)
        print(markdown(report))
        return 0
    methods = QUICK if args.quick else list(METHODS)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    scenarios = args.scenario or list(SCENARIOS)
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for scenario in scenarios:
            rounds = SCENARIOS[scenario]["federation"]["rounds"] // (4 if args.quick else 1)
            run_method(scenario, "float32 (FedAvg)", 1, out, seeds[0])  # warm-up, not timed
            per_seed: dict[str, list[dict[str, Any]]] = {}
            for method in methods:
                per_seed[method] = []
                for seed in seeds:
                    r = run_method(scenario, method, rounds, out, seed)
                    per_seed[method].append(r)
                    print(
                        f"  {scenario:<10} {method:<28} seed {seed}  acc {r['accuracy']:.4f}  "
                        f"up {r['bytes_up']:>10,} B  {r['seconds']:.1f} s",
                        flush=True,
                    )
            rows = summarise(per_seed)
            results[scenario] = rows
            print_table(rows, scenario)
    speed = throughput(10**6, 2 if args.quick else 5)
    print("\ncodec throughput on a 10^6-value float32 vector (MB/s of float32 input)")
    print(f"{'codec':<20}{'bytes':>10}{'ratio':>8}{'encode':>10}{'decode':>10}")
    for s in speed:
        print(
            f"{s['codec']:<20}{s['bytes']:>10,}{s['ratio']:>8.1f}"
            f"{s['encode_MBps']:>10.0f}{s['decode_MBps']:>10.0f}"
        )
    verdict = None
    if "activity" in results:
        rows = results["activity"]
        base = next(r for r in rows if r["method"] == "float32 (FedAvg)")
        winners = [
            r["method"]
            for r in rows
            if base["bytes_up"] / r["bytes_up"] >= 10 and r["points_vs_float32"] >= -1.0
        ]
        verdict = {
            "target": ">= 10x fewer uplink bytes, <= 1 point accuracy loss (activity)",
            "met_by": winners,
        }
        print(
            f"\ntarget (activity: >= 10x fewer uplink bytes at <= 1 point loss): "
            f"{'met by ' + ', '.join(winners) if winners else 'NOT MET'}"
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "machine": {
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                },
                "quick": args.quick,
                "seeds": seeds,
                "runs": results,
                "throughput": speed,
                "verdict": verdict,
            },
            indent=1,
        )
    )
    plot(results, args.plot)
    print(f"\nwrote {args.results} and {args.plot}")
    return 0 if verdict is None or verdict["met_by"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
