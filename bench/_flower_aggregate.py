"""Flower's side of bench/aggregation.py: time Flower's aggregation functions on one cohort.

Runs with the Flower interpreter (.venv-flower/bin/python; Flower is not installed in
.venv, where it would downgrade protobuf and break MLflow) and imports nothing from
fedlake. It loads the (n, d) float32 cohort that bench/aggregation.py saved, hands it to
Flower as n clients with one layer each and equal ``num_examples`` (so Flower's weighted
mean is the uniform mean), and applies the same measurement policy as the parent:

1. one run under tracemalloc: the peak of bytes allocated beyond what was live before
   (numpy reports its buffers to tracemalloc), and which clients Krum, Multi-Krum and
   Bulyan picked (recorded by wrapping Flower's own helpers, by object identity);
2. then ``repeats`` timed runs without tracemalloc, where ``repeats`` follows from the
   first run's duration (the parent's table, passed in the job file; at least
   ``at_least[kind]``); the time is the best of them.

    .venv-flower/bin/python bench/_flower_aggregate.py JOB.json

JOB.json: {"cohort": path.npy, "out": dir, "f": int, "m": int, "trim_ratio": float,
"num_examples": int, "repeat_policy": [[seconds, repeats], ...], "at_least": {kind: runs},
"kinds": [...]}.
Writes ``out/flower.json`` (per kind: times, peak bytes, picked clients) and
``out/<kind>.npy`` (Flower's result).
"""

from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flwr
import flwr.server.strategy.aggregate as fa
import numpy as np


def repeats_for(seconds: float, policy: list[list[float]]) -> int:
    """Timed repeats after a first run of ``seconds`` (the parent's table)."""
    for limit, repeats in policy:
        if seconds < limit:
            return int(repeats)
    return 1


class Recorder:
    """Which clients Flower picked, found by object identity in the original results."""

    def __init__(self, results: list[tuple[list[np.ndarray], int]]) -> None:
        self.index = {id(r[0]): i for i, r in enumerate(results)}
        self.picked: list[int] = []

    def multi_krum(self) -> Callable[..., Any]:
        """Wraps ``aggregate``, which Multi-Krum calls on the clients it keeps."""
        original = fa.aggregate

        def wrapped(results: list[tuple[list[np.ndarray], int]]) -> Any:
            self.picked = [self.index[id(r[0])] for r in results]
            return original(results)

        return wrapped

    def bulyan(self) -> Callable[..., Any]:
        """Wraps ``_find_reference_weights``, which Bulyan calls once per selection."""
        original = fa._find_reference_weights

        def wrapped(reference: Any, weights: list[Any]) -> int:
            idx = original(reference, weights)
            self.picked.append(self.index[id(weights[idx])])
            return idx

        return wrapped


def call(kind: str, results: list[Any], job: dict[str, Any]) -> list[np.ndarray]:
    """One Flower aggregation of ``results`` (Flower's NDArrays: one layer here)."""
    f = job["f"]
    if kind == "mean":
        out = fa.aggregate(results)
    elif kind == "krum":
        out = fa.aggregate_krum(results, num_malicious=f, to_keep=0)
    elif kind == "multi_krum":
        out = fa.aggregate_krum(results, num_malicious=f, to_keep=job["m"])
    elif kind == "bulyan":
        # aggregate_bulyan pops from the list it is given: hand it a copy
        out = fa.aggregate_bulyan(
            list(results), num_malicious=f, aggregation_rule=fa.aggregate_krum, to_keep=0
        )
    elif kind == "median":
        out = fa.aggregate_median(results)
    elif kind == "trimmed_mean":
        out = fa.aggregate_trimmed_avg(results, proportiontocut=job["trim_ratio"])
    else:
        raise ValueError(f"no Flower function for {kind!r}")
    return out


def measure(kind: str, results: list[Any], job: dict[str, Any]) -> dict[str, Any]:
    """Memory (and picked clients) from one traced run, then the best of the timed runs."""
    rec = Recorder(results)
    patches: dict[str, Any] = {}
    if kind == "multi_krum":
        patches["aggregate"] = rec.multi_krum()
    elif kind == "bulyan":
        patches["_find_reference_weights"] = rec.bulyan()
    saved = {name: getattr(fa, name) for name in patches}
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    for name, fn in patches.items():
        setattr(fa, name, fn)
    t0 = time.perf_counter()
    try:
        out = call(kind, results, job)
    finally:
        first = time.perf_counter() - t0
        for name, fn in saved.items():
            setattr(fa, name, fn)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    if kind == "krum":  # Krum returns the chosen client's own NDArrays list
        rec.picked = [rec.index[id(out)]]
    times = []
    for _ in range(max(job["at_least"][kind], repeats_for(first, job["repeat_policy"]))):
        gc.collect()
        t0 = time.perf_counter()
        call(kind, results, job)
        times.append(time.perf_counter() - t0)
    np.save(Path(job["out"]) / f"{kind}.npy", np.asarray(out[0]))
    return {
        "seconds": min(times),
        "times": times,
        "traced_run_seconds": first,
        "peak_extra_bytes": int(peak),
        "picked": rec.picked or None,
    }


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    matrix = np.load(job["cohort"])
    results = [([row], job["num_examples"]) for row in matrix]
    report: dict[str, Any] = {"flwr": flwr.__version__, "numpy": np.__version__, "rules": {}}
    for kind in job["kinds"]:
        report["rules"][kind] = measure(kind, results, job)
        print(f"flower {kind}: {report['rules'][kind]['seconds']:.3f} s", flush=True)
    (Path(job["out"]) / "flower.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
