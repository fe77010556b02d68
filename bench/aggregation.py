"""Time and peak memory of every aggregation rule, against Flower's aggregation functions.

For n in {10, 100, 1000} clients and d in {10^5, 10^6, 10^7} parameters, every rule in
``fedlake.aggregators.AGGREGATORS`` aggregates the same synthetic cohort, and so do
Flower's functions in ``flwr.server.strategy.aggregate`` where Flower has one (weighted
mean, Krum, Multi-Krum, Bulyan, median, trimmed mean). For each rule and cell:

* time: the best of a few runs (fewer for slow cells; REPEAT_POLICY);
* peak memory: the bytes allocated during one aggregation beyond what was live before
  (the input cohort), from tracemalloc, which sees numpy's buffers (not BLAS's own
  scratch space); also as a multiple of the cohort's size;
* against Flower: the speed ratio Flower / fedlake, the largest difference between the
  two results, and whether Krum, Multi-Krum and Bulyan picked the same clients.

Flower runs in its own interpreter (.venv-flower, ``make .venv-flower/.installed``;
installing Flower into .venv would downgrade protobuf and break MLflow) through
bench/_flower_aggregate.py, on the same cohort saved as .npy and with the same
measurement policy. Flower's Krum and Bulyan compute distances with a Python loop over
all pairs (Bulyan once per selected client), so a Flower function whose estimated time
exceeds --flower-budget is skipped, and the table says so. Cells whose float32 cohort
exceeds --max-cohort-gb, and rules whose memory (measured as a multiple on a smaller
cell) would not fit in the memory available, are skipped with the reason printed. Two
more cells repeat the comparison with Flower on a cohort whose values lie on a 1/16 grid,
as quantized updates' do: equal values are common there, so ties in Bulyan's "closest to
the median" show up (its differing coordinates are reported, not counted as a failure).
BLAS runs one thread on both sides unless --blas-threads says otherwise (see its help).

The run also measures the machine's memory read bandwidth (a sum and a BLAS dot over an
array much bigger than the caches) to put the weighted mean's throughput in context, and
times the alternatives we chose between (np.median vs a blocked sort, np.partition vs a
blocked sort, the Gram matrix vs a loop over pairs, ways to compute the weighted mean).

    python bench/aggregation.py            # everything (about 30 minutes on 2 shared cores)
    python bench/aggregation.py --quick    # small sizes, under a minute (smoke test)
    python bench/aggregation.py --render bench/results/aggregation.json   # Markdown

Writes bench/results/aggregation.json (or --out). Exits 1 when Krum or Multi-Krum is not
10x faster than Flower's at n = 100, d = 10^6, when the weighted mean reads its biggest
cohort at under 70% of the measured bandwidth or is slower than Flower's at any cell, or
when a result disagrees with Flower's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from functools import partial, reduce
from pathlib import Path
from typing import Any

import numpy as np
from _git import git_state  # bench/, beside this script
from rich.console import Console
from rich.table import Table

from fedlake.aggregators import AGGREGATORS, NEEDS_F, build_aggregator, fold_all
from fedlake.aggregators._matrix import (
    column_blocks,
    columnwise,
    pairwise_sq_distances,
)
from fedlake.core.aggregator import stack_deltas
from fedlake.core.update import ClientUpdate

# The package re-exports the functions krum and bulyan under their modules' names, so
# ``import fedlake.aggregators.krum as m`` would give the function: take the modules.
krum_module = sys.modules["fedlake.aggregators.krum"]
bulyan_module = sys.modules["fedlake.aggregators.bulyan"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "aggregation.json"
HELPER = ROOT / "bench" / "_flower_aggregate.py"
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"

SIZES = {"full": ((10, 100, 1000), (10**5, 10**6, 10**7)), "quick": ((10, 30), (10**4, 10**5))}
# After one traced run of t seconds: this many timed runs (the first limit above t), else 1.
REPEAT_POLICY = [[0.2, 5], [2.0, 3], [20.0, 2]]
TRIM_RATIO = 0.1
NUM_EXAMPLES = 100  # every client's weight (Flower's num_examples): weighted = uniform mean
TARGET = {"n": 100, "d": 10**6, "rules": ("krum", "multi_krum"), "speedup": 10.0, "repeats": 3}
# the weighted mean (every FedAvg round, the Spark fold): at least this fraction of the
# memory read bandwidth at the biggest cell, and no slower than Flower's at any cell
MEAN_TARGET = {"bandwidth_fraction": 0.7}
RTOL = 1e-5  # results agree when |ours - flower| <= RTOL * (|flower| + max |flower|)
FLOWER_FUNCTIONS = {
    "mean": "aggregate",
    "krum": "aggregate_krum(to_keep=0)",
    "multi_krum": "aggregate_krum(to_keep=m)",
    "bulyan": "aggregate_bulyan(aggregate_krum)",
    "median": "aggregate_median",
    "trimmed_mean": "aggregate_trimmed_avg",
}
GB = 1e9
GRID = 16  # the agreement check on quantized values rounds the cohort to multiples of 1/16
GRID_CELLS = {"full": ((10, 10**6), (30, 10**5)), "quick": ((10, 10**5),)}
console = Console(highlight=False, width=140)


def byzantine_f(n: int) -> int:
    """f for Krum, Multi-Krum and Bulyan: n // 10, at most (n - 3) // 4 (Bulyan's n >= 4f + 3)."""
    return min(n // 10, (n - 3) // 4)


def spec_for(kind: str, n: int, f: int) -> dict[str, Any]:
    """The config of rule ``kind`` in a cell of ``n`` clients (Multi-Krum keeps m = n - f)."""
    spec: dict[str, Any] = {"kind": kind}
    if kind in NEEDS_F:
        spec["f"] = f
    if kind == "multi_krum":
        spec["m"] = n - f
    if kind == "trimmed_mean":
        spec["trim_ratio"] = TRIM_RATIO
    return spec


def make_cohort(n: int, d: int, f: int, seed: int) -> np.ndarray:
    """An (n, d) float32 cohort: honest updates around a common direction, f Byzantine ones.

    Honest client i sends ``mu + sigma_i z_i`` with noise scales ``sigma_i`` spread over
    [0.5, 1.5] (heterogeneous clients, so Krum's scores are well separated, not near-ties);
    the f Byzantine clients, at random positions, send ``-3 mu + z_i`` (a scaled sign flip).
    """
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d, dtype=np.float32)
    sigma = rng.permutation(np.linspace(0.5, 1.5, n)).astype(np.float32)
    byzantine = set(rng.choice(n, size=f, replace=False).tolist())
    matrix = np.empty((n, d), dtype=np.float32)
    for i in range(n):
        row = matrix[i]
        rng.standard_normal(out=row, dtype=np.float32)
        if i in byzantine:
            row += np.float32(-3.0) * mu
        else:
            row *= sigma[i]
            row += mu
    return matrix


def updates_of(matrix: np.ndarray) -> list[ClientUpdate]:
    """One ClientUpdate per row (the rows are views: the cohort is in memory once)."""
    return [
        ClientUpdate(f"c{i}", {"delta": row}, float(NUM_EXAMPLES)) for i, row in enumerate(matrix)
    ]


def code_state() -> dict[str, Any]:
    """Which code was measured: HEAD, the aggregation sources' uncommitted changes, a hash."""
    import hashlib

    paths = ["src/fedlake/aggregators", "src/fedlake/core/aggregator.py"]
    files = sorted(ROOT.glob("src/fedlake/aggregators/*.py")) + [ROOT / paths[1]]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    head, changed = git_state(ROOT, *paths)
    return {"head": head, "uncommitted": changed, "sources_sha256": digest.hexdigest()[:16]}


def target_repeats(n: int, d: int, kind: str) -> int:
    """At least TARGET["repeats"] timed runs for the rules and cell of the 10x target."""
    hit = (n, d) == (TARGET["n"], TARGET["d"]) and kind in TARGET["rules"]
    return int(TARGET["repeats"]) if hit else 1


def limit_blas(threads: int) -> list[dict[str, Any]]:
    """Limit this process's BLAS (and OpenMP) pools to ``threads`` (0: leave them); the
    Flower helper gets the same through OPENBLAS_NUM_THREADS. Returns the pools' state."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads > 0:
        threadpool_limits(limits=threads)  # for the whole process
    keys = ("user_api", "internal_api", "version", "num_threads")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]


def thread_env(threads: int) -> dict[str, str]:
    """The environment for the Flower helper, with the same thread limit."""
    env = dict(os.environ)
    if threads > 0:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def first_of(fn: Callable[..., tuple[Any, ...]], *args: Any) -> Any:
    """``fn(*args)[0]``: an aggregation's vector without its state."""
    return fn(*args)[0]


def mem_available() -> int:
    """Bytes the kernel reports as available (MemAvailable), or a large number elsewhere."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 60


def repeats_for(seconds: float) -> int:
    """Timed runs after a traced run of ``seconds`` (the same rule as the Flower helper)."""
    return next((int(r) for limit, r in REPEAT_POLICY if seconds < limit), 1)


def measure(
    fn: Callable[[], Any],
    record: contextlib.AbstractContextManager[Any] | None = None,
    at_least: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """``(output, stats)``: one traced run for the peak memory, then the best of timed runs
    (REPEAT_POLICY's count, and ``at_least``)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        with record or contextlib.nullcontext():
            out = fn()
    finally:
        first = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    times = []
    for _ in range(max(at_least, repeats_for(first))):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    stats = {
        "seconds": min(times),
        "times": times,
        "traced_run_seconds": first,
        "peak_extra_bytes": int(peak),
    }
    return out, stats


@contextlib.contextmanager
def picking(kind: str, log: list[int]) -> Iterator[None]:
    """Record which clients fedlake's Krum, Multi-Krum or Bulyan picked (in choice order)."""
    module, name = {
        "krum": (krum_module, "krum_select"),
        "multi_krum": (krum_module, "krum_select"),
        "bulyan": (bulyan_module, "bulyan_select"),
    }.get(kind, (None, ""))
    if module is None:
        yield
        return
    original = getattr(module, name)

    def wrapped(*args: Any) -> Any:
        chosen = original(*args)
        log[:] = [int(i) for i in chosen]
        return chosen

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, original)


# ---------------------------------------------------------------------------------------
# Flower


def flower_numpy(python: Path) -> str | None:
    """The numpy version in Flower's interpreter, or None when it has no flwr."""
    proc = subprocess.run(
        [str(python), "-c", "import flwr, numpy; print(flwr.__version__, numpy.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


_PAIR: dict[int, float] = {}


def pair_seconds(d: int) -> float:
    """Seconds of one step of Flower's distance loop, ``norm(a - b) ** 2``, at dimension d."""
    if d not in _PAIR:
        rng = np.random.default_rng(1)
        a, b = rng.standard_normal((2, d), dtype=np.float32)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            _ = np.linalg.norm(a - b) ** 2
            times.append(time.perf_counter() - t0)
        _PAIR[d] = min(times) + 2e-6  # + the loop's Python overhead
    return _PAIR[d]


def flower_estimate(kind: str, n: int, d: int, f: int) -> float:
    """Estimated seconds of one call of Flower's function for ``kind``."""
    if kind in ("krum", "multi_krum"):
        return n * n * pair_seconds(d)
    if kind == "bulyan":  # one Krum (all pairs) per selected client, on n, n - 1, ... clients
        theta = n - 2 * f
        return sum(k * k for k in range(n - theta + 1, n + 1)) * pair_seconds(d)
    return 4 * n * d * 4 / 1e9  # a few passes over the cohort at ~1 GB/s


def run_flower(
    python: Path,
    cohort: Path,
    kinds: list[str],
    n: int,
    d: int,
    tmp: Path,
    timeout: float,
    threads: int,
) -> dict[str, Any]:
    """Run the helper on a saved cohort; returns its report (with the outputs loaded)."""
    f = byzantine_f(n)
    job = {
        "cohort": str(cohort),
        "out": str(tmp),
        "f": f,
        "m": n - f,
        "trim_ratio": TRIM_RATIO,
        "num_examples": NUM_EXAMPLES,
        "repeat_policy": REPEAT_POLICY,
        "at_least": {kind: target_repeats(n, d, kind) for kind in kinds},
        "kinds": kinds,
    }
    path = tmp / "job.json"
    path.write_text(json.dumps(job))
    try:
        proc = subprocess.run(
            [str(python), str(HELPER), str(path)],
            env=thread_env(threads),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"Flower's helper ran past {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"Flower's helper failed: {proc.stderr.strip()[-600:]}"}
    report = json.loads((tmp / "flower.json").read_text())
    for kind in report["rules"]:
        report["rules"][kind]["output"] = np.load(tmp / f"{kind}.npy")
    return report


def compare(
    kind: str, ours: np.ndarray, theirs: np.ndarray, ours_picked: Any, their_picked: Any
) -> dict[str, Any]:
    """How far fedlake's result is from Flower's, and whether they picked the same clients."""
    theirs = np.asarray(theirs, dtype=np.float64)
    diff = np.abs(np.asarray(ours, dtype=np.float64) - theirs)
    tol = RTOL * (np.abs(theirs) + np.abs(theirs).max())
    differ = diff > tol
    out: dict[str, Any] = {
        "max_abs_diff": float(diff.max()),
        "max_abs_value": float(np.abs(theirs).max()),
        "allclose": not bool(differ.any()),
        "coords_differing": float(differ.mean()),
        "coords_differing_count": int(differ.sum()),
    }
    if kind in ("krum", "multi_krum", "bulyan"):
        out["ours_picked"] = ours_picked
        out["flower_picked"] = their_picked
        out["same_clients"] = sorted(ours_picked or []) == sorted(their_picked or [])
        if kind == "bulyan":
            out["same_order"] = ours_picked == their_picked
    # Bulyan: rare float ties in "closest to the median" may be broken differently, so its
    # differing coordinates are reported, not counted as a disagreement.
    out["agree"] = out.get("same_clients", True) and (kind == "bulyan" or out["allclose"])
    return out


# ---------------------------------------------------------------------------------------
# The grid of rules x cells


def run_cell(
    n: int,
    d: int,
    args: argparse.Namespace,
    seen: dict[str, dict[str, float]],
    tmp: Path,
    grid: bool = False,
) -> dict[str, Any]:
    """Every rule on one (n, d) cohort, then Flower's functions on the same cohort.

    ``grid``: the cohort's values are rounded to multiples of 1/16, as quantized updates
    are, so many coordinates hold equal values; only the rules Flower also has run, to
    check that ties are handled alike (Flower's float32 arithmetic is exact there).
    """
    f = byzantine_f(n)
    cohort_bytes = n * d * 4
    cell: dict[str, Any] = {"n": n, "d": d, "f": f, "m": n - f, "cohort_bytes": cohort_bytes}
    if grid:
        cell["grid"] = GRID
    if cohort_bytes > args.max_cohort_gb * GB:
        cell["skipped"] = (
            f"cohort {cohort_bytes / GB:.0f} GB > {args.max_cohort_gb:g} GB "
            f"(the rules need 1-3.5x more; {mem_available() / GB:.0f} GB available)"
        )
        console.log(f"[yellow]skip n={n} d={d:.0e}: {cell['skipped']}")
        return cell
    t0 = time.perf_counter()
    matrix = make_cohort(n, d, f, seed=args.seed)
    if grid:
        np.round(matrix * GRID, out=matrix)
        matrix /= GRID
    console.log(
        f"[bold]n={n} d={d:.0e}{f' 1/{GRID} grid' if grid else ''}[/] f={f}: cohort "
        f"{cohort_bytes / 1e6:,.0f} MB "
        f"made in {time.perf_counter() - t0:.1f} s"
    )
    flower_kinds: list[str] = []
    flower_skipped: dict[str, str] = {}
    if args.flower_python is not None:
        for kind in FLOWER_FUNCTIONS:
            est = flower_estimate(kind, n, d, f)
            if est > args.flower_budget:
                flower_skipped[kind] = (
                    f"estimated {est:,.0f} s > budget {args.flower_budget:g} s "
                    f"(Python loop over pairs, {pair_seconds(d) * 1e3:.2f} ms each)"
                )
            else:
                flower_kinds.append(kind)
    cohort_file = tmp / "cohort.npy"
    updates = updates_of(matrix)
    rules: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    for kind in FLOWER_FUNCTIONS if grid else AGGREGATORS:
        spec = spec_for(kind, n, f)
        row: dict[str, Any] = {"spec": spec}
        rules[kind] = row
        need = seen["fedlake"].get(kind, 4.0) * cohort_bytes + 0.5 * GB
        if need > mem_available():
            row["skipped"] = (
                f"needs ~{need / GB:.1f} GB more (multiple measured on a smaller cell), "
                f"{mem_available() / GB:.1f} GB available"
            )
            console.log(f"  [yellow]skip {kind}: {row['skipped']}")
            continue
        agg = build_aggregator(spec)
        state = agg.init(d)
        at_least = target_repeats(n, d, kind)
        picked: list[int] = []
        # no name keeps the call (and through it the cohort) alive after the loop
        out, stats = measure(
            partial(first_of, agg.aggregate, updates, state), picking(kind, picked), at_least
        )
        outputs[kind] = out
        row.update(stats)
        row["peak_multiple"] = stats["peak_extra_bytes"] / cohort_bytes
        row["picked"] = picked or None
        row["GBps"] = cohort_bytes / stats["seconds"] / GB
        seen["fedlake"][kind] = row["peak_multiple"]
        console.log(
            f"  fedlake {kind:<17} {stats['seconds']:8.3f} s  "
            f"peak +{stats['peak_extra_bytes'] / 1e6:,.0f} MB ({row['peak_multiple']:.2f}x)  "
            f"[{len(stats['times'])} runs]"
        )
    if flower_kinds:  # saved only now: writing it earlier left GBs of dirty page cache
        np.save(cohort_file, matrix)  # for the kernel to flush while fedlake was timed
    del updates, matrix
    gc.collect()
    if flower_kinds:
        for kind in list(flower_kinds):
            need = (1 + seen["flower"].get(kind, 3.0)) * cohort_bytes + 1.0 * GB
            if need > mem_available():
                flower_kinds.remove(kind)
                flower_skipped[kind] = (
                    f"needs ~{need / GB:.1f} GB, {mem_available() / GB:.1f} GB available"
                )
    if flower_kinds:
        timeout = 20 * args.flower_budget * len(flower_kinds) + 600
        t0 = time.perf_counter()
        report = run_flower(
            args.flower_python, cohort_file, flower_kinds, n, d, tmp, timeout, args.blas_threads
        )
        console.log(f"  Flower ({', '.join(flower_kinds)}) took {time.perf_counter() - t0:.0f} s")
        if "error" in report:
            console.log(f"  [red]{report['error']}")
            for kind in flower_kinds:
                flower_skipped[kind] = report["error"]
        else:
            for kind, res in report["rules"].items():
                theirs = res.pop("output")
                res["peak_multiple"] = res["peak_extra_bytes"] / cohort_bytes
                seen["flower"][kind] = res["peak_multiple"]
                row = rules[kind]
                row["flower"] = res
                if kind in outputs:
                    row["speedup"] = res["seconds"] / row["seconds"]
                    row["compare"] = compare(
                        kind, outputs[kind], theirs, row.get("picked"), res["picked"]
                    )
                    c = row["compare"]
                    console.log(
                        f"  Flower  {kind:<17} {res['seconds']:8.3f} s  "
                        f"peak +{res['peak_extra_bytes'] / 1e6:,.0f} MB "
                        f"({res['peak_multiple']:.2f}x)  Flower/fedlake {row['speedup']:.1f}x  "
                        f"max abs diff {c['max_abs_diff']:.1e}"
                        + ("" if c["agree"] else "  [red]DISAGREE")
                    )
    for kind, why in flower_skipped.items():
        rules[kind]["flower_skipped"] = why
    cohort_file.unlink(missing_ok=True)
    cell["rules"] = rules
    print_cell(cell)
    return cell


def mb_multiple(nbytes: float, multiple: float) -> str:
    return f"{nbytes / 1e6:,.0f} MB ({multiple:.2f}x)"


def agreement(row: dict[str, Any]) -> str:
    """One cell of the 'same result' column."""
    c = row.get("compare")
    if c is None:
        return "-"
    text = f"max abs diff {c['max_abs_diff']:.1e}"
    if "same_clients" in c:
        text += ", same clients" if c["same_clients"] else ", OTHER CLIENTS"
    if row["spec"]["kind"] == "bulyan" and c["coords_differing"] > 0:
        text += (
            f", {c['coords_differing_count']:,} coords differ ({100 * c['coords_differing']:.2g}%)"
        )
    elif not c["allclose"]:
        text += ", NOT CLOSE"
    return text


def print_cell(cell: dict[str, Any]) -> None:
    """A rich table of one cell: both sides' time and memory, the ratio, the agreement."""
    n, f = cell["n"], cell["f"]
    table = Table(
        title=f"n = {n}, d = {cell_d(cell)} (cohort {cell['cohort_bytes'] / 1e6:,.0f} MB), "
        f"f = {f}, Multi-Krum m = {n - f}",
        title_justify="left",
    )
    for col in ("rule", "fedlake s", "fedlake peak extra", "Flower s", "Flower peak extra"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    table.add_column("Flower / fedlake", justify="right")
    table.add_column("same result")
    for kind, row in cell["rules"].items():
        if "skipped" in row:
            table.add_row(kind, "skipped", row["skipped"], "", "", "", "")
            continue
        fl = row.get("flower")
        flower_s = f"{fl['seconds']:.3f}" if fl else ("skipped" if "flower_skipped" in row else "-")
        table.add_row(
            kind,
            f"{row['seconds']:.3f}",
            mb_multiple(row["peak_extra_bytes"], row["peak_multiple"]),
            flower_s,
            mb_multiple(fl["peak_extra_bytes"], fl["peak_multiple"]) if fl else "",
            f"{row['speedup']:.1f}x" if "speedup" in row else "",
            agreement(row) if fl else row.get("flower_skipped", "no Flower function"),
        )
    console.print(table)


# ---------------------------------------------------------------------------------------
# Memory bandwidth and the alternatives


def memory_bandwidth(nbytes: int, repeats: int = 5) -> dict[str, float]:
    """Read bandwidth (GB/s) from a numpy sum (one core) and a BLAS dot (all cores) over an
    array of ``nbytes``, and a copy's rate; the read bandwidth is the better of the two."""
    x = np.empty(nbytes // 4, dtype=np.float32)
    x.fill(1.0)
    y = np.empty_like(x)
    y.fill(0.0)

    def best(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return x.nbytes / min(times) / GB

    out = {
        "array_bytes": x.nbytes,
        "sum_read_GBps": best(lambda: x.sum()),
        "dot_read_GBps": best(lambda: x @ x),
        "copy_GBps": best(lambda: np.copyto(y, x)),
    }
    out["read_GBps"] = max(out["sum_read_GBps"], out["dot_read_GBps"])
    return out


def flower_distance_loop(matrix: np.ndarray) -> np.ndarray:
    """Flower's _compute_distances: norm(a - b) ** 2 for all n^2 ordered pairs."""
    n = matrix.shape[0]
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = np.linalg.norm(matrix[i] - matrix[j]) ** 2
    return dist


def half_distance_loop(matrix: np.ndarray) -> np.ndarray:
    """The same loop over the n(n - 1)/2 unordered pairs (one BLAS dot each)."""
    n = matrix.shape[0]
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            diff = matrix[i] - matrix[j]
            dist[i, j] = dist[j, i] = np.dot(diff, diff)
    return dist


def float32_gram(matrix: np.ndarray) -> np.ndarray:
    """|a|^2 + |b|^2 - 2 a.b from one float32 matmul (no centring, no blocks)."""
    gram = (matrix @ matrix.T).astype(np.float64)
    sq = np.diag(gram).copy()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def blocked_gather_mean(updates: Sequence[ClientUpdate]) -> np.ndarray:
    """The weighted mean as fedlake computed it before the compiled loop (and still does
    without numba): per column block, gather the clients' slices into a float64 copy and
    reduce it with one float64 gemv."""
    n, d = len(updates), updates[0].delta.shape[0]
    w = np.array([u.weight for u in updates], dtype=np.float64)
    out = np.empty(d, dtype=np.float32)
    step = column_blocks(n, d).step
    for start in range(0, d, step):
        block = np.stack([u.delta[start : start + step] for u in updates], dtype=np.float64)
        out[start : start + step] = (w @ block) / w.sum()
    return out


def float32_reduce_mean(updates: Sequence[ClientUpdate]) -> np.ndarray:
    """Flower's ``aggregate``: each update times its weight in float32, summed with
    ``reduce(np.add)``, divided by the total (float32 throughout; a copy of the cohort)."""
    total = sum(u.weight for u in updates)
    return reduce(np.add, [u.delta * u.weight for u in updates]) / total


def alternatives(quick: bool) -> list[dict[str, Any]]:
    """Time the implementations we chose between, on the same cohorts; the first variant of
    each is the reference for the differences, the one marked (fedlake) is what we ship."""
    k_of = lambda n: int(TRIM_RATIO * n)  # noqa: E731
    median_agg = build_aggregator({"kind": "median"})
    trimmed_agg = build_aggregator({"kind": "trimmed_mean", "trim_ratio": TRIM_RATIO})

    def partition_trim(m: np.ndarray) -> np.ndarray:  # Flower's and scipy's trim_mean
        n, k = m.shape[0], k_of(m.shape[0])
        return np.partition(m, (k, n - k - 1), axis=0)[k : n - k].mean(axis=0)

    def blocked_partition_trim(m: np.ndarray) -> np.ndarray:
        n, k = m.shape[0], k_of(m.shape[0])
        return columnwise(
            m,
            lambda b: np.partition(b, (k, n - k - 1), axis=1)[:, k : n - k].mean(
                axis=1, dtype=np.float64
            ),
        )

    mean_agg = build_aggregator({"kind": "mean"})
    plan: list[tuple[str, list[tuple[int, int]], list[tuple[str, Callable[..., Any]]]]] = [
        (
            "coordinate median",
            [(10, 10**5), (30, 10**5)] if quick else [(10, 10**6), (100, 10**6), (1000, 10**5)],
            [
                (
                    "stack + np.median(axis=0) (partition)",
                    lambda u: np.median(stack_deltas(u), axis=0),
                ),
                (
                    "stack + blocked np.median(axis=1) (partition)",
                    lambda u: columnwise(stack_deltas(u), lambda b: np.median(b, axis=1)),
                ),
                ("fedlake: median (blocked sort)", lambda u: median_agg.aggregate(u, None)[0]),
            ],
        ),
        (
            "trimmed mean (10% each end)",
            [(10, 10**5), (30, 10**5)] if quick else [(10, 10**6), (100, 10**6), (1000, 10**5)],
            [
                (
                    "stack + np.partition(axis=0) (Flower, scipy)",
                    lambda u: partition_trim(stack_deltas(u)),
                ),
                (
                    "stack + blocked np.partition(axis=1)",
                    lambda u: blocked_partition_trim(stack_deltas(u)),
                ),
                (
                    "fedlake: trimmed_mean (blocked sort)",
                    lambda u: trimmed_agg.aggregate(u, None)[0],
                ),
            ],
        ),
        (
            "pairwise squared distances (Krum, Bulyan)",
            [(10, 10**5), (30, 10**5)] if quick else [(10, 10**6), (100, 10**5), (100, 10**6)],
            [
                ("loop over n^2 pairs (Flower's _compute_distances)", flower_distance_loop),
                ("loop over n(n-1)/2 pairs", half_distance_loop),
                ("one float32 Gram matmul, uncentred (a floor; overflows)", float32_gram),
                ("fedlake: pairwise_sq_distances (centred Gram, blocked)", pairwise_sq_distances),
            ],
        ),
        (
            "weighted mean",
            [(10, 10**5), (30, 10**5)] if quick else [(10, 10**7), (100, 10**6), (1000, 10**5)],
            [
                (
                    "fedlake: weighted_mean (compiled: float32 read once, 8 rows a pass)",
                    lambda u: mean_agg.aggregate(u, None)[0],
                ),
                (
                    "per-block float64 copy + gemv (before; the numpy stand-in)",
                    blocked_gather_mean,
                ),
                ("float32 w * x per client, reduce(np.add) (Flower)", float32_reduce_mean),
                (
                    "streaming fold (fold_all, float64)",
                    lambda u: fold_all(mean_agg, u, u[0].delta.shape[0], None)[0],
                ),
            ],
        ),
    ]
    rows = []
    for what, sizes, variants in plan:
        for n, d in sizes:
            matrix = make_cohort(n, d, byzantine_f(n), seed=1)
            updates = updates_of(matrix)
            entry: dict[str, Any] = {"what": what, "n": n, "d": d, "variants": []}
            reference = None
            for name, fn in variants:
                arg = matrix if what.startswith("pairwise") else updates
                out, stats = measure(lambda fn=fn, arg=arg: fn(arg))
                out = np.asarray(out, dtype=np.float64)
                if reference is None:
                    reference = out
                scale = np.abs(reference).max()
                stats["max_diff_vs_first"] = float(np.abs(out - reference).max() / scale)
                stats["peak_multiple"] = stats["peak_extra_bytes"] / matrix.nbytes
                entry["variants"].append({"name": name, **stats})
            base = entry["variants"][0]["seconds"]
            for v in entry["variants"]:
                v["speedup_vs_first"] = base / v["seconds"]
            rows.append(entry)
            console.log(
                f"alternatives: {what}, n={n} d={d:.0e}: "
                + ", ".join(f"{v['seconds']:.3f}" for v in entry["variants"])
                + " s"
            )
            del matrix, updates
    return rows


# ---------------------------------------------------------------------------------------
# Verdict and Markdown


def verdict(cells: list[dict[str, Any]], bandwidth_gbps: float, quick: bool) -> dict[str, Any]:
    """The 10x target at n = 100, d = 10^6, the weighted mean's target, and every
    disagreement with Flower."""
    target: dict[str, Any] = {
        "target": f"Krum and Multi-Krum >= {TARGET['speedup']:g}x faster than Flower's "
        f"at n = {TARGET['n']}, d = {TARGET['d']:.0e}",
        "speedups": {},
    }
    cell = next(
        (c for c in cells if (c["n"], c["d"]) == (TARGET["n"], TARGET["d"]) and "grid" not in c),
        None,
    )
    for kind in TARGET["rules"]:
        row = (cell or {}).get("rules", {}).get(kind, {})
        target["speedups"][kind] = row.get("speedup")
    got = list(target["speedups"].values())
    if any(s is None for s in got):
        target["result"] = "not measured"
    else:
        target["result"] = "PASS" if all(s >= TARGET["speedup"] for s in got) else "FAIL"
    disagreements = []
    bulyan_coords = []
    for c in cells:
        for kind, row in c.get("rules", {}).items():
            cmp_ = row.get("compare")
            if cmp_ is None:
                continue
            if not cmp_["agree"]:
                disagreements.append({"n": c["n"], "d": c["d"], "rule": kind, **cmp_})
            if kind == "bulyan":
                bulyan_coords.append(
                    {
                        "n": c["n"],
                        "d": c["d"],
                        "grid": c.get("grid"),
                        "coords_differing": cmp_["coords_differing"],
                        "coords_differing_count": cmp_["coords_differing_count"],
                    }
                )
    return {
        **target,
        "mean": mean_verdict(cells, bandwidth_gbps, quick),
        "disagreements": disagreements,
        "bulyan_coords_differing": bulyan_coords,
    }


def mean_verdict(cells: list[dict[str, Any]], bandwidth_gbps: float, quick: bool) -> dict[str, Any]:
    """The weighted mean's target: its read rate at the biggest cell as a fraction of the
    measured bandwidth, and its speed against Flower's ``aggregate`` at every cell. Not
    judged on --quick's sizes, whose cohorts fit in cache (fixed costs, not bandwidth)."""
    rows = [
        (c, c["rules"]["mean"]) for c in cells if "seconds" in c.get("rules", {}).get("mean", {})
    ]
    per_cell = [
        {
            "n": c["n"],
            "d": c["d"],
            "grid": c.get("grid"),
            "GBps": r["GBps"],
            "bandwidth_fraction": r["GBps"] / bandwidth_gbps,
            "vs_flower": r.get("speedup"),
        }
        for c, r in rows
    ]
    plain = [(c, r) for c, r in rows if "grid" not in c]
    if quick or not plain:
        return {"result": "not measured", "cells": per_cell}
    big = max(plain, key=lambda cr: cr[0]["cohort_bytes"])[1]
    fraction = big["GBps"] / bandwidth_gbps
    ratios = [x["vs_flower"] for x in per_cell if x["vs_flower"] is not None]
    worst = min(ratios) if ratios else None
    ok = fraction >= MEAN_TARGET["bandwidth_fraction"] and (worst is None or worst >= 1.0)
    return {
        "target": f"weighted mean >= {100 * MEAN_TARGET['bandwidth_fraction']:.0f}% of the read "
        "bandwidth at the biggest cell, and not slower than Flower's at any cell",
        "bandwidth_fraction": fraction,
        "worst_vs_flower": worst,
        "result": "PASS" if ok else "FAIL",
        "cells": per_cell,
    }


def policy_text(policy: list[list[float]]) -> str:
    """REPEAT_POLICY in words: '5 timed runs if the traced run took < 0.2 s, 3 if < 2 s, ...'."""
    parts = [f"{int(r)} if < {limit:g} s" for limit, r in policy]
    return "timed runs: " + ", ".join(parts) + ", else 1"


def fmt_d(d: int) -> str:
    return f"10^{round(math.log10(d))}"


def cell_d(cell: dict[str, Any]) -> str:
    """A cell's d, and its value grid when it has one."""
    return fmt_d(cell["d"]) + (f" (values on a 1/{cell['grid']} grid)" if "grid" in cell else "")


def markdown(report: dict[str, Any]) -> str:
    """The recorded JSON as Markdown tables (for docs)."""
    bw = report["bandwidth"]
    out = [
        f"Memory read bandwidth: {bw['read_GBps']:.1f} GB/s (numpy sum {bw['sum_read_GBps']:.1f}, "
        f"BLAS dot {bw['dot_read_GBps']:.1f}; copy {bw['copy_GBps']:.1f} GB/s) over a "
        f"{bw['array_bytes'] / 2**20:,.0f} MiB array.",
        "",
        f"Time: the best of {policy_text(report['settings']['repeat_policy'])} "
        f"(at least {TARGET['repeats']} for Krum and Multi-Krum at the target's cell), after "
        "one traced run. Peak: the extra bytes allocated during one aggregation beyond the "
        "input cohort (tracemalloc; fixed per-block temporaries dominate in small cells), "
        "and as a multiple of the cohort. f = n // 10 (at most (n - 3) // 4, Bulyan's "
        f"n >= 4f + 3); Multi-Krum keeps m = n - f. BLAS threads: "
        f"{report.get('blas_threads') or 'library default'}. "
        + ("Flower {} (numpy {}).".format(*report["flower"].split()) if report["flower"] else ""),
        "",
        "| n | d | rule | fedlake s | fedlake peak extra | Flower s | Flower peak extra "
        "| Flower / fedlake | same result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cells"]:
        if "skipped" in c:
            out.append(f"| {c['n']} | {cell_d(c)} | all | skipped: {c['skipped']} |||||")
            continue
        for kind, row in c["rules"].items():
            label = kind + (f" (f={c['f']})" if kind in NEEDS_F else "")
            if "skipped" in row:
                out.append(f"| {c['n']} | {cell_d(c)} | {label} | skipped: {row['skipped']} |||||")
                continue
            fl = row.get("flower")
            if fl:
                peak = mb_multiple(fl["peak_extra_bytes"], fl["peak_multiple"])
                flower = f"{fl['seconds']:.3f} | {peak}"
                ratio, same = f"{row['speedup']:.1f}x", agreement(row)
            else:
                flower, ratio = ("skipped | " if "flower_skipped" in row else "- | "), ""
                same = row.get("flower_skipped", "no Flower function")
            extra = ""
            if kind == "mean":
                share = row["GBps"] / report["bandwidth"]["read_GBps"]
                extra = f" ({row['GBps']:.2f} GB/s, {100 * share:.0f}% of bandwidth)"
            out.append(
                f"| {c['n']} | {cell_d(c)} | {label} | {row['seconds']:.3f}{extra} "
                f"| {mb_multiple(row['peak_extra_bytes'], row['peak_multiple'])} | {flower} "
                f"| {ratio} | {same} |"
            )
    mt = report.get("mean_throughput")
    if mt:
        out += [
            "",
            f"Weighted mean at n = {mt['n']}, d = {fmt_d(mt['d'])}: {mt['GBps']:.2f} GB/s of "
            f"cohort read = {100 * mt['ratio']:.0f}% of the memory read bandwidth "
            f"({mt['bandwidth_GBps']:.1f} GB/s).",
        ]
    v = report["verdict"]
    speed = ", ".join(
        f"{k} {s:.1f}x" if s is not None else f"{k} -" for k, s in v["speedups"].items()
    )
    out += ["", f"Target ({v['target']}): **{v['result']}** ({speed})."]
    mv = v.get("mean")
    if mv and "target" in mv:
        worst = mv["worst_vs_flower"]
        out.append(
            f"Target ({mv['target']}): **{mv['result']}** ({100 * mv['bandwidth_fraction']:.0f}% "
            "of the bandwidth; slowest against Flower "
            + (f"{worst:.1f}x" if worst is not None else "not measured")
            + ")."
        )
    if v["disagreements"]:
        out.append(
            "Disagreements with Flower: "
            + "; ".join(f"{x['rule']} at n={x['n']}, d={fmt_d(x['d'])}" for x in v["disagreements"])
        )
    out += [
        "",
        "| alternative | n | d | seconds | peak extra (x cohort) | speed-up vs first "
        "| max diff vs first (relative) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in report["alternatives"]:
        for var in a["variants"]:
            out.append(
                f"| {a['what']}: {var['name']} | {a['n']} | {fmt_d(a['d'])} | {var['seconds']:.3f} "
                f"| {var['peak_multiple']:.2f}x | {var['speedup_vs_first']:.1f}x "
                f"| {var['max_diff_vs_first']:.1e} |"
            )
    return "\n".join(out)


def print_alternatives(rows: list[dict[str, Any]]) -> None:
    table = Table(title="alternatives (same cohort per row group)", title_justify="left")
    for col in ("what", "n", "d", "variant", "s", "peak x", "vs first", "max rel diff"):
        table.add_column(col, justify="left" if col in ("what", "variant") else "right")
    for a in rows:
        for i, v in enumerate(a["variants"]):
            table.add_row(
                a["what"] if i == 0 else "",
                str(a["n"]) if i == 0 else "",
                fmt_d(a["d"]) if i == 0 else "",
                v["name"],
                f"{v['seconds']:.3f}",
                f"{v['peak_multiple']:.2f}",
                f"{v['speedup_vs_first']:.1f}x",
                f"{v['max_diff_vs_first']:.1e}",
            )
    console.print(table)


def main() -> int:
    """Run the benchmark; exit 1 when the 10x target is missed or a result disagrees."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds (smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON to write ({RESULTS})")
    ap.add_argument("--flower", type=Path, default=FLOWER_PYTHON, help="Flower's interpreter")
    ap.add_argument("--no-flower", action="store_true", help="fedlake's rules only")
    ap.add_argument(
        "--flower-budget",
        type=float,
        default=60.0,
        help="skip a Flower function whose estimated time per call exceeds this (s)",
    )
    ap.add_argument("--max-cohort-gb", type=float, default=6.0, help="skip bigger cohorts")
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads on both sides (0: the libraries' default). 1 by default: on this "
        "2-core machine shared with other work, 2 OpenBLAS threads made BLAS calls 3-10x "
        "slower and erratic",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render", type=Path, help="print a recorded JSON as Markdown, exit")
    args = ap.parse_args()
    if args.render is not None:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    started = time.perf_counter()
    blas = limit_blas(args.blas_threads)
    code = code_state()
    console.log(
        f"measuring {code['head'][:10]}"
        + (f" + uncommitted {', '.join(code['uncommitted'])}" if code["uncommitted"] else "")
    )
    console.log(
        "BLAS: "
        + ", ".join(f"{b['internal_api']} {b['version']} x{b['num_threads']}" for b in blas)
    )
    ns, ds = SIZES["quick" if args.quick else "full"]
    args.flower_python = None
    flower_versions = None
    if not args.no_flower:
        flower_versions = flower_numpy(args.flower) if args.flower.exists() else None
        if flower_versions is None:
            console.log(
                f"[yellow]Flower comparison skipped: no flwr at {args.flower} "
                "(make .venv-flower/.installed)"
            )
        else:
            args.flower_python = args.flower
            flwr_v, np_v = flower_versions.split()
            console.log(f"Flower {flwr_v} (numpy {np_v}) at {args.flower}")
            if np_v != np.__version__:
                console.log(f"[yellow]numpy differs: {np.__version__} here, {np_v} in Flower's")
    bandwidth = memory_bandwidth((512 << 20) if args.quick else (2 << 30))
    console.log(
        f"memory read bandwidth {bandwidth['read_GBps']:.1f} GB/s (sum "
        f"{bandwidth['sum_read_GBps']:.1f}, dot {bandwidth['dot_read_GBps']:.1f}; copy "
        f"{bandwidth['copy_GBps']:.1f})"
    )
    # smallest cohorts first: each rule's memory multiple is known before the big cells
    grid = sorted(((n, d) for n in ns for d in ds), key=lambda nd: (nd[0] * nd[1], nd[0]))
    seen: dict[str, dict[str, float]] = {"fedlake": {}, "flower": {}}
    cells = []
    with tempfile.TemporaryDirectory(prefix="fedlake-bench-") as tmp:
        # warm up BLAS threads and numpy's sorts, so the first cell is not charged for them
        warm = make_cohort(10, 10**4, 1, seed=9)
        for kind in AGGREGATORS:
            build_aggregator(spec_for(kind, 10, 1)).aggregate(updates_of(warm), None)
        for n, d in grid:
            cells.append(run_cell(n, d, args, seen, Path(tmp)))
        if args.flower_python is not None:
            for n, d in GRID_CELLS["quick" if args.quick else "full"]:
                cells.append(run_cell(n, d, args, seen, Path(tmp), grid=True))
    alt = alternatives(args.quick)
    print_alternatives(alt)
    measured = [
        c for c in cells if "grid" not in c and "seconds" in c.get("rules", {}).get("mean", {})
    ]
    mean_throughput = None
    if measured:
        big = max(measured, key=lambda c: c["cohort_bytes"])
        gbps = big["rules"]["mean"]["GBps"]
        mean_throughput = {
            "n": big["n"],
            "d": big["d"],
            "GBps": gbps,
            "bandwidth_GBps": bandwidth["read_GBps"],
            "ratio": gbps / bandwidth["read_GBps"],
        }
    report = {
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "mem_total_GB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1),
        },
        "code": code,
        "blas_threads": args.blas_threads,
        "blas": blas,
        "flower": flower_versions,
        "quick": args.quick,
        "seed": args.seed,
        "settings": {
            "f": "min(n // 10, (n - 3) // 4)",
            "multi_krum_m": "n - f",
            "trim_ratio": TRIM_RATIO,
            "num_examples": NUM_EXAMPLES,
            "repeat_policy": REPEAT_POLICY,
            "flower_budget_s": args.flower_budget,
            "max_cohort_gb": args.max_cohort_gb,
            "rtol": RTOL,
        },
        "bandwidth": bandwidth,
        "mean_throughput": mean_throughput,
        "cells": cells,
        "alternatives": alt,
    }
    report["verdict"] = verdict(cells, bandwidth["read_GBps"], args.quick)
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(markdown(report))
    v = report["verdict"]
    colour = {"PASS": "green", "FAIL": "red"}.get(v["result"], "yellow")
    console.print(f"\n[bold {colour}]{v['target']}: {v['result']}[/] {v['speedups']}")
    mv = v["mean"]
    if "target" in mv:
        colour = {"PASS": "green", "FAIL": "red"}[mv["result"]]
        console.print(
            f"[bold {colour}]{mv['target']}: {mv['result']}[/] "
            f"({100 * mv['bandwidth_fraction']:.0f}% of bandwidth, slowest vs Flower "
            f"{mv['worst_vs_flower']})"
        )
    if mean_throughput:
        console.print(
            f"weighted mean: {mean_throughput['GBps']:.2f} GB/s at n={mean_throughput['n']}, "
            f"d={fmt_d(mean_throughput['d'])} = {100 * mean_throughput['ratio']:.0f}% of "
            f"{mean_throughput['bandwidth_GBps']:.1f} GB/s read bandwidth"
        )
    for x in v["disagreements"]:
        console.print(f"[red]disagrees with Flower: {x['rule']} n={x['n']} d={x['d']}: {x}")
    console.print(f"wrote {args.out} in {report['seconds'] / 60:.1f} min")
    return 1 if "FAIL" in (v["result"], mv["result"]) or v["disagreements"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
