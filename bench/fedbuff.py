"""FedBuff against synchronous FedAvg on one simulated clock: the same wearable users,
the same device profiles, the same local training; simulated hours to a target accuracy.

Population: the ``activity`` scenario's procedurally generated users (40 window
features, logistic regression, local SGD, 1 epoch, batch 32). Devices: diurnal
availability, heavy-tailed training and upload times (``DeviceProfiles``: median 60 s of
training and 10 s of upload, log-normal spread 1.0). FedBuff (Nguyen et al., AISTATS 2022):
``concurrency`` devices in flight, a server step every ``K`` arrivals, staleness weight
1/sqrt(1 + tau). Synchronous FedAvg: rounds of ``concurrency`` devices, each round as
long as its slowest device. Accuracy: the global model on held-out users' test windows
(users not in the training population). Several seeds; the median of the ratios.

    python bench/fedbuff.py                # ~1 minute on 2 cores
    python bench/fedbuff.py --seeds 1 --target 0.6
    python bench/fedbuff.py --render bench/results/fedbuff.json

Writes bench/results/fedbuff.json (or --out). The paper reports FedBuff 3.3x more
efficient than synchronous FL; the target here: FedBuff reaches the target accuracy in
less simulated time than synchronous rounds (ratio > 1).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--buffer", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.75)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-users", type=int, default=60)
    ap.add_argument("--out", default=str(BENCH / "results" / "fedbuff.json"))
    ap.add_argument("--render", help="print a recorded JSON as Markdown, exit")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0

    from fedlake.algorithms.fedavg import fedavg
    from fedlake.backends.inline import InlineExecutor
    from fedlake.client.fleet import ClientFleet
    from fedlake.client.logreg import LogRegTrainer
    from fedlake.client.stores import MemoryStateStore
    from fedlake.data.activity import ACTIVITIES, FEATURE_NAMES, ActivityPopulation
    from fedlake.simulation.devices import DeviceProfiles
    from fedlake.simulation.fedbuff import FedBuffConfig, run_fedbuff, run_sync

    trainer = LogRegTrainer(len(FEATURE_NAMES), len(ACTIVITIES))
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        population = ActivityPopulation(args.users, seed=seed, features=True)
        held_out = ActivityPopulation(args.eval_users, seed=10_000 + seed, features=True)
        tests = [held_out.load(cid) for cid in held_out.client_ids()]
        x = np.concatenate([d.x_test for d in tests])
        y = np.concatenate([d.y_test for d in tests])

        def evaluate(params: np.ndarray, x: np.ndarray = x, y: np.ndarray = y) -> float:
            return float(trainer.evaluate(params, x, y)["accuracy"])

        recipe = functools.partial(fedavg, client_lr=0.1, local_epochs=1, batch_size=32)
        fleet = ClientFleet(population, trainer, recipe)
        ids = population.client_ids()
        profiles = DeviceProfiles(seed=seed)
        params = trainer.init_params(seed)
        common = dict(fleet=fleet, ids=ids, profiles=profiles, params=params,
                      evaluate=evaluate, seed=seed, target=args.target)  # fmt: skip
        t0 = time.perf_counter()
        buffered = run_fedbuff(
            executor=InlineExecutor(fleet, MemoryStateStore()),
            config=FedBuffConfig(concurrency=args.concurrency, buffer=args.buffer),
            **common,  # type: ignore[arg-type]
        )
        t1 = time.perf_counter()
        sync = run_sync(
            executor=InlineExecutor(fleet, MemoryStateStore()),
            cohort=args.concurrency,
            **common,  # type: ignore[arg-type]
        )
        t2 = time.perf_counter()
        over = run_sync(
            executor=InlineExecutor(fleet, MemoryStateStore()),
            cohort=args.concurrency,
            over_select=0.3,
            **common,  # type: ignore[arg-type]
        )
        t3 = time.perf_counter()
        run = {
            "seed": seed,
            "fedbuff": _summary(buffered, args.target, t1 - t0),
            "sync": _summary(sync, args.target, t2 - t1),
            "sync_over": _summary(over, args.target, t3 - t2),
        }
        a = run["fedbuff"]["hours_to_target"]
        b, c = run["sync"]["hours_to_target"], run["sync_over"]["hours_to_target"]
        run["speedup"] = b / a if a and b else None
        run["speedup_over"] = c / a if a and c else None
        runs.append(run)
        print(json.dumps(run), flush=True)
    ratios = [r["speedup"] for r in runs if r["speedup"]]
    over_ratios = [r["speedup_over"] for r in runs if r["speedup_over"]]
    out = {
        "environment": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
        "settings": vars(args),
        "runs": runs,
        "median_speedup": statistics.median(ratios) if ratios else None,
        "median_speedup_over": statistics.median(over_ratios) if over_ratios else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(render(out))
    return 0


def _summary(history: list[Any], target: float, wall_s: float) -> dict[str, Any]:
    reached = next((p for p in history if p.accuracy >= target), None)
    last = history[-1]
    return {
        "hours_to_target": reached.time_s / 3600 if reached else None,
        "steps": last.version,
        "updates": last.arrivals,
        "stale": last.stale,
        "final_accuracy": last.accuracy,
        "wall_s": wall_s,
    }


def render(data: dict[str, Any]) -> str:
    """The runs as a Markdown table."""
    s = data["settings"]
    lines = [
        f"{s['users']:,} users, {s['concurrency']} devices in flight, K = {s['buffer']}, "
        f"target {s['target']:.0%} on {s['eval_users']} held-out users.",
        "",
        "| seed | run | simulated hours to target | server steps | client updates "
        "| sync / FedBuff |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    names = (
        ("fedbuff", "FedBuff", None),
        ("sync", "sync FedAvg", "speedup"),
        ("sync_over", "sync FedAvg, 130% over-selection", "speedup_over"),
    )
    for r in data["runs"]:
        for key, label, ratio in names:
            x = r[key]
            value = r[ratio] if ratio else None
            shown = f"{value:.2f}x" if value else ""
            lines.append(
                f"| {r['seed']} | {label} | {_h(x['hours_to_target'])} | {x['steps']} "
                f"| {x['updates']} | {shown} |"
            )
    for key, label in (
        ("median_speedup", "sync FedAvg"),
        ("median_speedup_over", "over-selection"),
    ):
        med = data.get(key)
        if med:
            lines.append(f"\nMedian over seeds: FedBuff {med:.2f}x sooner than {label}.")
    return "\n".join(lines)


def _h(hours: float | None) -> str:
    return f"{hours:.2f} h" if hours is not None else "not reached"


if __name__ == "__main__":
    raise SystemExit(main())
