"""Rounds of 100, 1,000 and 10,000 devices from a population of a million, per executor:
round time, clients trained per second, and peak memory of the driver and of the whole
process tree (Spark's JVM and Python workers, the process pool's workers included).

Each cell runs ``bench/_scale_run.py`` in a fresh process: the ``activity`` scenario with
1,000,000 procedurally generated wearable users (40 window features each; a user's data
is generated where it trains, never stored), logistic regression, FedAvg, two rounds (the
first a warm-up: Spark's JVM and workers, pools, compilation), 20 evaluation clients.
Executors: ``inline`` (this process, vectorised), ``process`` (2 spawned workers, folding
in the workers), ``spark`` (``local[2]``, folding in the tasks, ``treeReduce``), and
``spark`` on ``local[1]`` and ``process`` with 1 worker for the cores' effect.

Targets (issue 17): the driver's peak at 10,000 clients per round at most 1.2x its peak at
100 (linear aggregation streams); clients per second grow with executor cores.

    python bench/scale.py                  # every cell (~35 min on 2 cores)
    python bench/scale.py --cohorts 100,1000 --executors spark
    python bench/scale.py --render bench/results/scale.json

Writes bench/results/scale.json and docs/img/scale.png (or --out, --plot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _procs import pss_bytes, tree

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGET_DRIVER = 1.2  # driver peak at 10,000 clients / at 100, at most
EXECUTORS: dict[str, dict[str, Any]] = {
    "inline": {"kind": "inline"},
    "process": {"kind": "process", "workers": 2, "fold": True},
    "spark": {"kind": "spark", "workers": 2, "fold": True},
    "process-1": {"kind": "process", "workers": 1, "fold": True},
    "spark-1": {"kind": "spark", "workers": 1, "fold": True},
}
CORES_COHORT = 1000  # the cohort of the 1-core runs


def watched(args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``args``, sampling its process tree's PSS; its stdout, peak PSS and wall time
    (``error`` instead when it failed or ran past ``timeout``)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT, env=env)  # fmt: skip
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], sum(pss_bytes(p) for p in tree(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in reversed(tree(proc.pid)):  # Ray's processes too
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"past the {timeout:g} s timeout"}
    finally:
        done.set()
        sampler.join()
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}"}
    return {"stdout": stdout, "tree_peak_pss": peak[0], "wall_s": time.perf_counter() - t0}


def run_cell(executor: str, cohort: int, rounds: int, timeout: float) -> dict[str, Any]:
    """One cell in a fresh process; its rounds, driver peak and process tree's peak PSS."""
    if executor == "flower":
        return run_flower(cohort, rounds, timeout)
    with tempfile.TemporaryDirectory() as out:
        job = {"executor": EXECUTORS[executor], "cohort": cohort, "rounds": rounds, "out": out}
        ran = watched([sys.executable, str(BENCH / "_scale_run.py"), json.dumps(job)], timeout)
    if "error" in ran or not ran["stdout"].strip():
        return {"error": ran.get("error", "no output")}
    res = json.loads(ran["stdout"].strip().splitlines()[-1])
    timed = res["rounds"][-1]
    return {
        "round_s": timed["seconds"],
        "warmup_s": res["rounds"][0]["seconds"],
        "clients_per_s": cohort / timed["seconds"],
        "completed": timed["completed"],
        "driver_peak_rss": res["driver_peak_rss"],
        "tree_peak_pss": ran["tree_peak_pss"],
        "wall_s": ran["wall_s"],
    }


def run_flower(cohort: int, rounds: int, timeout: float) -> dict[str, Any]:
    """Flower's simulation (Ray) on the same workload: its population is the cohort (it
    needs a supernode per client: a million would not start), every client trains each
    round; round 2's time is from round 1's evaluation to round 2's."""
    python = ROOT / ".venv-flower" / "bin" / "python"
    if not python.exists():
        return {"error": "no .venv-flower (see bench/README.md)"}
    with tempfile.TemporaryDirectory() as out:
        job = {"src": str(ROOT / "src"), "workload": "activity", "population": cohort,
               "cohort": cohort, "rounds": rounds, "alpha": 1.0, "beta": 1.0, "data_seed": 0,
               "seed": 0, "lr": 0.1, "epochs": 1, "batch_size": 32, "client_cpus": 1.0,
               "ray_num_cpus": os.cpu_count() or 2, "out": f"{out}/flower.json"}  # fmt: skip
        path = Path(out) / "job.json"
        path.write_text(json.dumps(job))
        env = {**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        ran = watched([str(python), str(BENCH / "_flower_sim.py"), str(path)], timeout, env)
        if "error" in ran:
            return ran
        res = json.loads(Path(job["out"]).read_text())
    times = [r["t"] for r in res["rounds"]]  # Flower evaluates the initial model too
    round_s = times[-1] - times[-2]
    return {
        "round_s": round_s,
        "warmup_s": times[1] - times[0],
        "clients_per_s": cohort / round_s,
        "completed": cohort,
        "driver_peak_rss": res["driver_maxrss_kb"] * 1024,
        "tree_peak_pss": ran["tree_peak_pss"],
        "wall_s": ran["wall_s"],
        "flwr": res["flwr"],
    }


def render(data: dict[str, Any]) -> str:
    """The recorded cells as Markdown tables."""
    env = data["environment"]
    lines = [
        f"{env['cpus']} CPUs, {env['platform']}; population {data['population']:,} users; "
        "each cell a fresh process, round 2 timed (round 1 a warm-up).",
        "",
        "| executor | clients per round | round | clients / s | driver peak RSS | "
        "process tree peak PSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cell in data["cells"]:
        r = cell["result"]
        if "error" in r:
            lines.append(f"| {cell['executor']} | {cell['cohort']:,} | {r['error']} ||||")
            continue
        lines.append(
            f"| {cell['executor']} | {cell['cohort']:,} | {r['round_s']:.2f} s "
            f"| {r['clients_per_s']:.0f} | {r['driver_peak_rss'] / 1e6:.0f} MB "
            f"| {r['tree_peak_pss'] / 1e6:.0f} MB |"
        )
    lines += ["", *verdicts(data)]
    return "\n".join(lines)


def _cell(data: dict[str, Any], executor: str, cohort: int) -> dict[str, Any] | None:
    for cell in data["cells"]:
        if (
            cell["executor"] == executor
            and cell["cohort"] == cohort
            and "error" not in cell["result"]
        ):
            return cell["result"]  # type: ignore[no-any-return]
    return None


def verdicts(data: dict[str, Any]) -> list[str]:
    """The targets, judged on the recorded cells."""
    out = []
    for name in ("inline", "process", "spark"):
        small, large = _cell(data, name, 100), _cell(data, name, 10_000)
        if small and large:
            ratio = large["driver_peak_rss"] / small["driver_peak_rss"]
            verdict = "PASS" if ratio <= TARGET_DRIVER else "FAIL"
            out.append(
                f"- {name}: driver peak at 10,000 clients / at 100 = {ratio:.2f}x "
                f"(target <= {TARGET_DRIVER}x): {verdict}"
            )
    for name in ("process", "spark"):
        one, two = _cell(data, f"{name}-1", CORES_COHORT), _cell(data, name, CORES_COHORT)
        if one and two:
            gain = two["clients_per_s"] / one["clients_per_s"]
            verdict = "PASS" if gain > 1.0 else "FAIL"
            out.append(
                f"- {name}: clients per second with 2 cores / 1 core at {CORES_COHORT:,} "
                f"clients = {gain:.2f}x (target > 1): {verdict}"
            )
    for cohort in sorted({c["cohort"] for c in data["cells"] if c["executor"] == "flower"}):
        flower = next(c["result"] for c in data["cells"]
                      if c["executor"] == "flower" and c["cohort"] == cohort)  # fmt: skip
        ours = {n: _cell(data, n, cohort) for n in ("inline", "process", "spark")}
        if "error" in flower:
            ran = ", ".join(f"{n} {r['round_s']:.0f} s" for n, r in ours.items() if r)
            out.append(f"- Flower at {cohort:,} clients: {flower['error']} (fedlake: {ran})")
            continue
        ratios = ", ".join(f"{n} {r['clients_per_s'] / flower['clients_per_s']:.1f}x"
                           for n, r in ours.items() if r)  # fmt: skip
        out.append(f"- clients per second against Flower's simulation at {cohort:,}: {ratios}")
    return out


def plot(data: dict[str, Any], path: Path) -> None:
    """Clients per second and driver peak against the cohort, one line per executor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("inline", "process", "spark", "flower"):
        cells = [c for c in data["cells"] if c["executor"] == name and "error" not in c["result"]]
        xs = [c["cohort"] for c in cells]
        left.plot(xs, [c["result"]["clients_per_s"] for c in cells], marker="o", label=name)
        right.plot(
            xs, [c["result"]["driver_peak_rss"] / 1e6 for c in cells], marker="o", label=name
        )
    for ax, title in ((left, "clients trained per second"), (right, "driver peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("clients per round")
        ax.set_title(title)
        ax.legend()
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    fig.suptitle("Rounds from a population of 1,000,000 users (bench/scale.py)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohorts", default="100,1000,10000")
    ap.add_argument("--executors", default="inline,process,spark")
    ap.add_argument("--no-cores", action="store_true", help="skip the 1-core runs")
    ap.add_argument("--flower", default="100,1000,10000", help="Flower's cohorts ('' for none)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="per cell (s)")
    ap.add_argument("--flower-timeout", type=float, default=900.0, help="per Flower cell (s)")
    ap.add_argument("--out", default=str(BENCH / "results" / "scale.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "scale.png"))
    ap.add_argument("--render", help="print a recorded JSON as Markdown, exit")
    ap.add_argument("--replot", action="store_true", help="with --render: redraw the plot")
    args = ap.parse_args()
    if args.render:
        recorded = json.loads(Path(args.render).read_text())
        print(render(recorded))
        if args.replot:
            plot(recorded, Path(args.plot))
        return 0
    cells = [(e, int(c)) for e in args.executors.split(",") for c in args.cohorts.split(",")]
    if not args.no_cores:
        cells += [(f"{e}-1", CORES_COHORT) for e in args.executors.split(",") if e != "inline"]
    cells += [("flower", int(c)) for c in args.flower.split(",") if c]
    data: dict[str, Any] = {
        "environment": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "population": 1_000_000,
        "date": time.strftime("%Y-%m-%d"),
        "cells": [],
    }
    for executor, cohort in cells:
        print(f"{executor} x {cohort:,} clients ...", flush=True)
        failed = [c["cohort"] for c in data["cells"]
                  if c["executor"] == executor and "error" in c["result"]]  # fmt: skip
        if failed:  # a smaller cohort did not finish: a larger one will not either
            result = {"error": f"not tried: {min(failed):,} clients did not finish"}
        else:
            limit = args.flower_timeout if executor == "flower" else args.timeout
            result = run_cell(executor, cohort, rounds=2, timeout=limit)
        data["cells"].append({"executor": executor, "cohort": cohort, "result": result})
        print(f"  {json.dumps(result)}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    plot(data, Path(args.plot))
    print(render(data))
    print(f"\nwrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
