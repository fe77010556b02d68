"""fedlake against Flower's simulation engine on FedProx's Synthetic(1, 1) FedAvg workload.

The same workload runs in both frameworks: data ``fedprox_synthetic(1, 1, seed=0)`` (30
devices, 60 features, 10 classes, a 90/10 train/test split per device), multinomial
logistic regression, FedAvg weighted by examples, client lr 0.01, batch 10, 20 local
epochs, 10 of 30 devices per round, 200 rounds (Li et al., "Federated Optimization in
Heterogeneous Networks", MLSys 2020). Accuracy: the global model after the last round on
the concatenated test splits of all devices.

* fedlake: ``fedlake run``'s code path (``run_experiment`` on a parsed config: cohort
  sampling, checkpoints every round, the report plot), inline executor, lakehouse off.
* Flower 1.42 (``flwr[simulation]``, Ray backend) through bench/_flower_sim.py in its own
  interpreter (.venv-flower): ``run_simulation`` with a ServerApp running Flower's
  ``FedAvg`` and a ClientApp that trains with fedlake's own numpy ``LogRegTrainer``, so
  per-client compute is identical and the comparison measures the frameworks. 30
  supernodes, ``num_cpus = 1`` per client (2 clients at once on 2 cores), no client-side
  evaluation, centralized evaluation every round. Same data and hyperparameters; the
  cohorts and clients' shuffles are seeded on both sides but drawn differently (fedlake's
  round generators, Flower's ``random.sample``), so the runs are not step-identical. A
  third, diagnostic run (not with --quick or --no-replay) makes Flower replay fedlake's
  cohorts and clients' generators: its accuracy then follows fedlake's round for round,
  which separates what the frameworks do from the luck of the draws.

Each side runs in its own process, with BLAS and OpenMP pinned to one thread. Measured:

* wall time: of the call that runs the federation (``run_experiment``; ``run_simulation``,
  Ray's start-up and shut-down included), of the whole process (interpreter and imports
  too), and of the rounds alone (from the start of round 1 to the end of the last round's
  evaluation: run_started to the last round_finished event in fedlake; Flower's initial
  centralized evaluation to its last one);
* peak memory: the largest sum of RSS (and of PSS, which shares shared pages such as
  Ray's object store among the processes mapping them) over the side's process tree
  (the side's process and all its descendants: Ray's GCS, raylet, workers), sampled from
  /proc every 0.2 s; for fedlake also ``ru_maxrss`` of its (single) process;
* clients trained per second at cohorts of 10, 100 and 1,000: a population of that many
  devices (``fedprox_synthetic(1, 1, num_devices=n, seed=0)``), all of them trained every
  round, the same constants, COHORT_ROUNDS rounds; clients/s = clients trained in rounds
  2.. / the time of those rounds (round 1 absorbs start-up: Ray's actors, the actors'
  data, first calls), start-up excluded.

    python bench/vs_flower_simulation.py                      # everything (~10 min, 2 cores)
    python bench/vs_flower_simulation.py --quick --no-flower  # seconds (smoke test)
    python bench/vs_flower_simulation.py --render bench/results/vs_flower_simulation.json

Writes bench/results/vs_flower_simulation.json (or --out). With --check, exits 1 when
fedlake is not TARGET_SPEEDUP times faster at equal accuracy (within 1 point).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _git import git_state  # bench/, beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "vs_flower_simulation.json"
HELPER = ROOT / "bench" / "_flower_sim.py"
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"

# FedProx Synthetic(1, 1) with FedAvg: the paper's constants
WORKLOAD: dict[str, Any] = {
    "alpha": 1.0,
    "beta": 1.0,
    "population": 30,
    "cohort": 10,
    "rounds": 200,
    "lr": 0.01,
    "epochs": 20,
    "batch_size": 10,
    "seed": 0,
}
COHORTS = {"full": (10, 100, 1000), "quick": (10, 30)}
COHORT_ROUNDS = 3  # round 1 is start-up; clients/s is measured over rounds 2 and 3
QUICK_ROUNDS = 3
TARGET_SPEEDUP = 10.0
ACCURACY_POINTS = 1.0  # "equal accuracy": within this many percentage points
SAMPLE_EVERY = 0.2  # seconds between memory samples
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RAY_NUM_CPUS = os.cpu_count() or 1
CLIENT_CPUS = 1
MB = 1e6


# ---------------------------------------------------------------------------------------
# fedlake's side (this file, run as a subprocess with --fedlake-job)


def run_config(cell: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """The fedlake run config of a cell (examples/synthetic_fedavg.toml, lakehouse off)."""
    return {
        "name": f"synthetic-{cell['population']}-{cell['cohort']}",
        "seed": cell["seed"],
        "output_dir": out_dir,
        "data": {
            "scenario": "synthetic",
            "alpha": cell["alpha"],
            "beta": cell["beta"],
            "num_clients": cell["population"],
        },
        "model": {"kind": "logreg"},
        "algorithm": {
            "name": "fedavg",
            "client_lr": cell["lr"],
            "local_epochs": cell["epochs"],
            "batch_size": cell["batch_size"],
        },
        "federation": {"rounds": cell["rounds"], "clients_per_round": cell["cohort"]},
        "executor": {"kind": "inline"},
        "lakehouse": {"delta": False, "mlflow": False},
    }


def fedlake_side(job_path: Path) -> int:
    """Run one cell through ``run_experiment``; write times, accuracy and ru_maxrss."""
    t_start = time.perf_counter()
    from fedlake.config import parse_config
    from fedlake.orchestration.events import NullObserver

    try:
        from fedlake.run.experiment import run_experiment
    except ImportError:  # --src of a commit from before the seam redesign
        from fedlake.runner import run_experiment  # type: ignore[no-redef]

    job = json.loads(job_path.read_text())

    class Clock(NullObserver):
        """Remembers when the run started and when each round finished."""

        def __init__(self) -> None:
            super().__init__()
            self.started = 0.0
            self.finished: list[float] = []

        def run_started(self, *, total_rounds: int, start_round: int, resumed: bool) -> None:
            self.started = time.perf_counter()

        def round_finished(self, record: Any) -> None:
            super().round_finished(record)
            self.finished.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="fedlake-vs-flower-") as out:
        cfg = parse_config(run_config(job, out))
        t0 = time.perf_counter()
        outcome = run_experiment(cfg, observer=clock)
        wall = time.perf_counter() - t0
    hist = [h for h in outcome.result.history if h.get("eval_accuracy") is not None]
    report = {
        "wall_s": wall,
        "imports_s": t0 - t_start,
        "rounds_started_s": clock.started - t0,
        "rounds": [
            {"round": int(h["round"]), "t": t - t0, "accuracy": h["eval_accuracy"]}
            | {"loss": h["eval_loss"]}
            for h, t in zip(hist, clock.finished, strict=True)
        ],
        "stop_reason": outcome.result.stop_reason,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    Path(job["out"]).write_text(json.dumps(report, indent=1))
    return 0


# ---------------------------------------------------------------------------------------
# measuring a side's process tree


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat's parent ids)."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of ``pid`` in bytes (0, 0 once it is gone)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in rollup[1:]}
    return values.get("Rss", 0), values.get("Pss", 0)


class TreeMemory:
    """Samples the summed RSS and PSS of a process tree every SAMPLE_EVERY seconds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = self.peak_pss = self.max_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            sizes = [_rss_pss(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(s[0] for s in sizes))
            self.peak_pss = max(self.peak_pss, sum(s[1] for s in sizes))
            self.max_processes = max(self.max_processes, len(pids))
            self.samples += 1
            self._stop.wait(SAMPLE_EVERY)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_tree_mb": self.peak_rss / MB,
            "peak_pss_tree_mb": self.peak_pss / MB,
            "max_processes": self.max_processes,
            "memory_samples": self.samples,
        }


def side_env(src: Path) -> dict[str, str]:
    """The environment of both sides: fedlake from ``src``, one BLAS thread, no telemetry."""
    env = dict(os.environ)
    env.update({var: "1" for var in BLAS_VARS})
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


WARM_UP = (
    "import numpy as np\n"
    "from fedlake.client.logreg import LogRegTrainer\n"
    "from fedlake.core.algorithm import LocalConfig\n"
    "x = np.zeros((4, 2), np.float32); y = np.array([0, 1, 0, 1])\n"
    "LogRegTrainer(2, 2).fit(np.zeros(6, np.float32), x, y, config=LocalConfig(),"
    " rng=np.random.default_rng(0))\n"
    "import fedlake.client.logreg_kernel as k\n"
    "assert k.AVAILABLE, 'numba is missing: this side would run the slow numpy loop'\n"
)


def warm_compiled_code(src: Path, pythons: list[Path | str]) -> float:
    """Compile the numba client loop once per interpreter before any timing; returns seconds.

    numba caches the machine code beside the sources, so both sides then load the same
    compiled loop instead of timing a one-off compile (a first run on a new machine pays
    it once, as this returns).
    """
    t0 = time.perf_counter()
    for python in pythons:
        subprocess.run([str(python), "-c", WARM_UP], env=side_env(src), check=True, cwd=ROOT)
    return time.perf_counter() - t0


def run_side(cmd: list[str], out: Path, src: Path, timeout: float) -> dict[str, Any]:
    """Run one side's process, sampling its tree's memory; its report plus our measures."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=side_env(src), stdout=log, stderr=log, text=True)
        memory = TreeMemory(proc.pid)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        process_wall = time.perf_counter() - t0
        mem = memory.stop()
        log.seek(0)
        tail = log.read()[-1500:]
    if code != 0 or not out.exists():
        why = f"ran past {timeout:.0f} s" if code is None else f"exit {code}"
        return {"error": f"{cmd[1]} {why}: {tail}"}
    report = json.loads(out.read_text())
    report.update(mem, process_wall_s=process_wall)
    return report


def summarise(side: dict[str, Any], *, cohort: int) -> dict[str, Any]:
    """Rounds time, clients/s (rounds 2..), final accuracy from a side's round timestamps."""
    if "error" in side:
        return side
    rounds = [r for r in side["rounds"] if r["round"] >= 1]
    start = next((r["t"] for r in side["rounds"] if r["round"] == 0), None)
    if start is None:  # fedlake: the run_started event
        start = side["rounds_started_s"]
    last = rounds[-1]
    out = dict(side)
    out.update(
        rounds_run=len(rounds),
        rounds_s=last["t"] - start,
        startup_s=side["wall_s"] - (last["t"] - start),
        final_accuracy=last["accuracy"],
        last10_accuracy=sum(r["accuracy"] for r in rounds[-10:]) / len(rounds[-10:]),
        final_loss=last["loss"],
    )
    if len(rounds) >= 2:
        later = last["t"] - rounds[0]["t"]
        out["clients_per_s"] = cohort * (len(rounds) - 1) / later
        out["clients_per_s_rounds"] = f"2-{last['round']}"
    return out


def fedlake_cell(cell: dict[str, Any], tmp: Path, src: Path, timeout: float) -> dict[str, Any]:
    job = tmp / "fedlake-job.json"
    out = tmp / "fedlake-out.json"
    out.unlink(missing_ok=True)
    job.write_text(json.dumps({**cell, "out": str(out)}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fedlake-job", str(job)]
    return summarise(run_side(cmd, out, src, timeout), cohort=cell["cohort"])


def flower_cell(
    cell: dict[str, Any], python: Path, tmp: Path, src: Path, timeout: float
) -> dict[str, Any]:
    job = tmp / "flower-job.json"
    out = tmp / "flower-out.json"
    out.unlink(missing_ok=True)
    spec = {
        **cell,
        "src": str(src),
        "data_seed": cell["seed"],
        "client_cpus": CLIENT_CPUS,
        "ray_num_cpus": RAY_NUM_CPUS,
        "out": str(out),
    }
    job.write_text(json.dumps(spec))
    cmd = [str(python), str(HELPER), str(job)]
    return summarise(run_side(cmd, out, src, timeout), cohort=cell["cohort"])


# ---------------------------------------------------------------------------------------
# report


def fedlake_tags(src: Path) -> dict[str, int]:
    """The purpose tags of fedlake's cohort and client generators (for the replay run),
    read from the measured sources ``src``."""
    code = (
        "try:\n"
        "    from fedlake.core.rng import CLIENT_RNG\n"
        "    from fedlake.orchestration.sampling import COHORT_RNG\n"
        "except ImportError:\n"  # sources from before the seam redesign
        "    from fedlake.client.local import CLIENT_RNG\n"
        "    from fedlake.orchestration.draw import COHORT_RNG\n"
        "print(COHORT_RNG, CLIENT_RNG)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=side_env(src), capture_output=True, text=True, check=True
    )
    cohort_tag, client_tag = map(int, proc.stdout.split())
    return {"cohort_tag": cohort_tag, "client_tag": client_tag}


def code_state(src: Path) -> dict[str, Any]:
    """Which fedlake was measured: ``src``, its checkout's HEAD and uncommitted changes."""
    head, changed = git_state(src, ".")
    return {"src": str(src), "head": head, "uncommitted_src": changed}


def flower_versions(python: Path) -> dict[str, str] | None:
    """flwr, ray and numpy in Flower's interpreter, or None without flwr or ray there."""
    if not python.exists():
        return None
    code = "import flwr, ray, numpy; print(flwr.__version__, ray.__version__, numpy.__version__)"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    flwr_v, ray_v, np_v = proc.stdout.split()
    return {"flwr": flwr_v, "ray": ray_v, "numpy": np_v}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdict(workload: dict[str, Any]) -> dict[str, Any]:
    """Whether fedlake is TARGET_SPEEDUP times faster (call wall time) at equal accuracy."""
    ours, theirs = workload["fedlake"], workload.get("flower")
    target = f"fedlake >= {TARGET_SPEEDUP:g}x faster at equal accuracy (+-{ACCURACY_POINTS:g} pt)"
    if theirs is None or "error" in theirs or "error" in ours:
        return {"target": target, "result": "NOT MEASURED"}
    speedup = theirs["wall_s"] / ours["wall_s"]
    points = 100 * (ours["final_accuracy"] - theirs["final_accuracy"])
    out = {
        "target": target,
        "speedup_wall": speedup,
        "speedup_rounds": theirs["rounds_s"] / ours["rounds_s"],
        "accuracy_points_diff": points,
        "accuracy_judged_on": "Flower's own draws",
    }
    replay = workload.get("flower_replay")
    if replay is not None and "error" not in replay:
        # same cohorts and shuffles: what is left of the gap is the frameworks' own doing
        points = 100 * (ours["final_accuracy"] - replay["final_accuracy"])
        out.update(accuracy_points_diff_replay=points, accuracy_judged_on="the replay run")
    ok = speedup >= TARGET_SPEEDUP and abs(points) <= ACCURACY_POINTS
    out["result"] = "PASS" if ok else "FAIL"
    return out


def fmt(x: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    """The recorded tables as Markdown."""
    w = report["workload"]
    spec = w["spec"]
    ours, theirs = w["fedlake"], w.get("flower") or {}
    m = report["machine"]
    fl = report.get("flower_versions") or {}
    lines = [
        f"FedProx Synthetic({spec['alpha']:g}, {spec['beta']:g}), FedAvg, logistic regression, "
        f"{spec['cohort']} of {spec['population']} devices per round, {spec['rounds']} rounds, "
        f"lr {spec['lr']:g}, batch {spec['batch_size']}, {spec['epochs']} local epochs, "
        f"seed {spec['seed']}. {m['platform']}, {m['cpus']} CPUs; BLAS 1 thread on both "
        f"sides; both run fedlake's compiled logreg client loop (numba, compiled once before "
        f"timing: {report.get('compile_s', 0):.1f} s). fedlake: one process, inline executor "
        f"(clients on {m['cpus']} threads), lakehouse off. Flower "
        f"{fl.get('flwr', '-')} simulation, Ray {fl.get('ray', '-')}, {RAY_NUM_CPUS} CPUs, "
        f"num_cpus = {CLIENT_CPUS} per client ({RAY_NUM_CPUS // CLIENT_CPUS} clients at once).",
        "",
    ]
    if "error" in theirs:
        lines += [f"Flower failed: {theirs['error'][:400]}", ""]
    rows = [
        ("wall time of the run call (s)", "wall_s", ".1f", True),
        ("  of which rounds (s)", "rounds_s", ".1f", True),
        ("  of which start-up and the rest (s)", "startup_s", ".1f", True),
        ("whole process (s)", "process_wall_s", ".1f", True),
        ("peak RSS, process tree (MB)", "peak_rss_tree_mb", ".0f", True),
        ("peak PSS, process tree (MB)", "peak_pss_tree_mb", ".0f", True),
        ("processes (most at once)", "max_processes", "d", False),
        ("final test accuracy (%)", "final_accuracy", ".2f", False),
        ("mean accuracy, last 10 rounds (%)", "last10_accuracy", ".2f", False),
    ]
    lines += ["| | fedlake | Flower | Flower / fedlake |", "|---|---:|---:|---:|"]
    for label, key, f, show_ratio in rows:
        a, b = ours.get(key), theirs.get(key)
        if key.endswith("accuracy"):
            a = None if a is None else 100 * a
            b = None if b is None else 100 * b
        r = fmt(ratio(b, a), ".1f", "x") if show_ratio else ""
        lines.append(f"| {label} | {fmt(a, f)} | {fmt(b, f)} | {r} |")
    maxrss = ours.get("maxrss_kb")
    maxrss_mb = None if maxrss is None else maxrss * 1024 / MB
    lines.append(f"| ru_maxrss of fedlake's process (MB) | {fmt(maxrss_mb, '.0f')} | | |")
    rep = w.get("flower_replay")
    if rep is not None and "error" not in rep:
        lines.append(
            f"| Flower replaying fedlake's cohorts and client generators: final / last-10 "
            f"accuracy (%) | | {100 * rep['final_accuracy']:.2f} / "
            f"{100 * rep['last10_accuracy']:.2f} | |"
        )
    v = report["verdict"]
    if "speedup_wall" in v:
        lines += [
            "",
            f"Target ({v['target']}): **{v['result']}**: {v['speedup_wall']:.1f}x on the "
            f"run call's wall time, {v['speedup_rounds']:.1f}x on the rounds alone; final "
            f"accuracy fedlake - Flower {v['accuracy_points_diff']:+.2f} points with each "
            "side's own cohorts"
            + (
                f", {v['accuracy_points_diff_replay']:+.2f} points when Flower replays "
                "fedlake's cohorts and shuffles (judged on that)."
                if "accuracy_points_diff_replay" in v
                else "."
            ),
        ]
    else:
        lines += ["", f"Target ({v['target']}): {v['result']}."]
    c = report["cohorts"]
    lines += [
        "",
        f"Clients trained per second (population = cohort, every client trains every round; "
        f"{c['rounds']} rounds, rounds 2-{c['rounds']} timed, start-up excluded; "
        f"{c['epochs']} local epochs, batch {spec['batch_size']}):",
        "",
        "| cohort | train examples | fedlake clients/s | Flower clients/s | fedlake / Flower "
        "| fedlake round (s) | Flower round (s) | note |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for cell in c["cells"]:
        a, b = cell["fedlake"], cell.get("flower") or {}
        per_a = ratio(cell["cohort"], a.get("clients_per_s"))
        per_b = ratio(cell["cohort"], b.get("clients_per_s"))
        note = cell.get("note", "")
        if "error" in b:
            note = (note + " Flower failed").strip()
        lines.append(
            f"| {cell['cohort']:,} | {cell.get('train_examples', 0):,} "
            f"| {fmt(a.get('clients_per_s'), '.1f')} | {fmt(b.get('clients_per_s'), '.1f')} "
            f"| {fmt(ratio(a.get('clients_per_s'), b.get('clients_per_s')), '.1f', 'x')} "
            f"| {fmt(per_a, '.2f')} | {fmt(per_b, '.2f')} | {note} |"
        )
    load = m.get("load_average_1min")
    lines += [
        "",
        f"Whole benchmark: {report['seconds'] / 60:.1f} min"
        + (f"; 1-minute load average {load[0]:g} before, {load[1]:g} after." if load else "."),
    ]
    return "\n".join(lines)


def train_examples(population: int, seed: int) -> int:
    """Training examples in a Synthetic(1, 1) population (the work of one round at cohort = n)."""
    from fedlake.data.synthetic import fedprox_synthetic

    data = fedprox_synthetic(1.0, 1.0, num_devices=population, seed=seed)
    return sum(data.load(c).num_train for c in data.client_ids())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds, small cohorts")
    ap.add_argument("--no-flower", action="store_true", help="fedlake's side only")
    ap.add_argument(
        "--flower-python", type=Path, default=FLOWER_PYTHON, help="Flower's interpreter"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON to write ({RESULTS})")
    ap.add_argument("--rounds", type=int, help="rounds of the workload (default 200)")
    ap.add_argument(
        "--cohort-epochs",
        type=int,
        default=WORKLOAD["epochs"],
        help="local epochs in the clients/s cells (default: the workload's 20)",
    )
    ap.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="fedlake's sources to measure, on both sides (default: this checkout's src; "
        "e.g. a `git worktree` of a commit, to measure it while src/ is being edited)",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="per side and cell (s)")
    ap.add_argument(
        "--no-replay",
        action="store_true",
        help="skip the diagnostic Flower run that replays fedlake's cohorts and clients' "
        "generators (it separates the frameworks' accuracy gap from sampling luck)",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    ap.add_argument("--render", type=Path, help="print a recorded JSON as Markdown, exit")
    ap.add_argument("--fedlake-job", type=Path, help=argparse.SUPPRESS)  # the fedlake side
    args = ap.parse_args()
    if args.fedlake_job is not None:
        return fedlake_side(args.fedlake_job)
    if args.render is not None:
        recorded = json.loads(args.render.read_text())
        recorded["verdict"] = verdict(recorded["workload"])  # a function of the numbers
        print(markdown(recorded))
        return 0
    started = time.perf_counter()
    import numpy as np

    src = args.src.resolve()
    load_before = os.getloadavg()

    flower_python = None
    versions = None
    if not args.no_flower:
        versions = flower_versions(args.flower_python)
        if versions is None:
            print(
                f"Flower skipped: no flwr[simulation] at {args.flower_python} "
                "(make .venv-flower/.installed)",
                flush=True,
            )
        else:
            flower_python = args.flower_python
            if versions["numpy"] != np.__version__:
                print(f"numpy differs: {np.__version__} here, {versions['numpy']} in Flower's")
    pythons: list[Path | str] = [sys.executable]
    if flower_python is not None:
        pythons.append(flower_python)
    compile_s = warm_compiled_code(src, pythons)
    print(f"compiled the client loop for {len(pythons)} interpreter(s) in {compile_s:.1f} s")
    spec = dict(WORKLOAD)
    spec["rounds"] = args.rounds or (QUICK_ROUNDS if args.quick else WORKLOAD["rounds"])
    cohort_epochs = 1 if args.quick else args.cohort_epochs
    with tempfile.TemporaryDirectory(prefix="fedlake-vs-flower-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"workload: {spec['rounds']} rounds; fedlake ...", flush=True)
        workload: dict[str, Any] = {
            "spec": spec,
            "fedlake": fedlake_cell(spec, tmp, src, args.timeout),
        }
        print(f"  {brief(workload['fedlake'])}", flush=True)
        if flower_python is not None:
            print("  Flower ...", flush=True)
            workload["flower"] = flower_cell(spec, flower_python, tmp, src, args.timeout)
            print(f"  {brief(workload['flower'])}", flush=True)
            if not (args.quick or args.no_replay):
                print("  Flower, replaying fedlake's cohorts and client generators ...")
                replay = dict(spec, replay=fedlake_tags(src))
                workload["flower_replay"] = flower_cell(
                    replay, flower_python, tmp, src, args.timeout
                )
                print(f"  {brief(workload['flower_replay'])}", flush=True)
        cells = []
        for n in COHORTS["quick" if args.quick else "full"]:
            cell_spec = dict(
                spec, population=n, cohort=n, rounds=COHORT_ROUNDS, epochs=cohort_epochs
            )
            cell: dict[str, Any] = {
                "cohort": n,
                "spec": cell_spec,
                "train_examples": train_examples(n, spec["seed"]),
            }
            print(f"cohort {n}: fedlake ...", flush=True)
            cell["fedlake"] = fedlake_cell(cell_spec, tmp, src, args.timeout)
            print(f"  {brief(cell['fedlake'])}", flush=True)
            if flower_python is not None:
                print("  Flower ...", flush=True)
                cell["flower"] = flower_cell(cell_spec, flower_python, tmp, src, args.timeout)
                print(f"  {brief(cell['flower'])}", flush=True)
            cells.append(cell)
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "mem_total_GB": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1
            ),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            # other work on the machine slows both sides (1-minute load, before and after)
            "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "code": code_state(src),
        "flower_versions": versions,
        "quick": args.quick,
        "blas_threads": 1,
        # the numba client loop, compiled (and cached) before timing, for both sides
        "compile_s": round(compile_s, 2),
        "ray": {"num_cpus": RAY_NUM_CPUS, "client_num_cpus": CLIENT_CPUS},
        "memory": "peak over 0.2 s samples of the summed RSS / PSS of each side's process tree "
        "(from /proc); fedlake also reports ru_maxrss of its one process",
        "workload": workload,
        "cohorts": {"rounds": COHORT_ROUNDS, "epochs": cohort_epochs, "cells": cells},
    }
    report["verdict"] = verdict(workload)
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(markdown(report))
    print(f"\nwrote {args.out}")
    failed = "error" in workload["fedlake"] or any("error" in c["fedlake"] for c in cells)
    if failed:
        return 1
    return 1 if args.check and report["verdict"]["result"] != "PASS" else 0


def brief(side: dict[str, Any]) -> str:
    """One progress line about a side's run."""
    if "error" in side:
        return f"FAILED: {side['error'][-600:]}"
    cps = side.get("clients_per_s")
    return (
        f"wall {side['wall_s']:.1f} s (rounds {side['rounds_s']:.1f} s), accuracy "
        f"{100 * side['final_accuracy']:.2f}%, peak RSS {side['peak_rss_tree_mb']:.0f} MB"
        + (f", {cps:.1f} clients/s" if cps else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
