"""Run every example the README quotes and record what it printed: the source of those numbers.

README's "What you should see" table and docs/results.md's examples table are rendered
from bench/results/examples.json, between ``<!-- recorded:examples -->`` markers, and
tests/integration/test_recorded_examples.py fails when either table differs from the
JSON or when the code no longer produces the recorded outcomes (stop round, reason,
accuracy, byte ratios, and the SHA-256 of the final and best global models, so that a
refactor that changes any trained bit fails on the recording machine kind). Wall times
are recorded too, but only for the tables: machines are noisy.

Results depend on the machine's floating-point kernels (torch's CPU capability, the BLAS
core type): the same code reaches the same model bit for bit on one machine kind, while
another kind's convolution kernels sum in another order and can reach the target a few
rounds apart. The JSON records the machine kind (see :func:`machine_kind`); the test
demands equality on that kind and a documented tolerance elsewhere.

    python bench/examples.py              # run them all (about 5 minutes on 2 cores)
    python bench/examples.py --write      # ... and rewrite the two tables from the JSON
    python bench/examples.py --render     # print the tables of the recorded JSON, exit
    python bench/examples.py --only digits,breast_cancer   # a subset (merged into the JSON)

Runs use the configs as users do (MLflow and Delta on, under a temporary folder), so the
wall times include the lakehouse writes, as in `make run`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "examples.json"
README = ROOT / "README.md"
DOC = ROOT / "docs" / "results.md"
BEGIN = "<!-- recorded:examples {table} (bench/examples.py --write; do not edit by hand) -->"
END = "<!-- /recorded:examples -->"


@dataclass(frozen=True)
class Example:
    """One recorded run: a config, an optional seed override, and how the tables name it."""

    key: str
    config: str
    label: str  # the table's first column
    seed: int | None = None
    listed: bool = True  # in the README's and docs' tables (else only its numbers are pinned)


EXAMPLES: tuple[Example, ...] = (
    Example("activity", "activity_fedavg.toml", "`make run` (activity, seed 0)"),
    Example("activity_seed1", "activity_fedavg.toml", "same, seed 1", seed=1),
    Example("activity_seed2", "activity_fedavg.toml", "same, seed 2", seed=2),
    Example("activity_seed3", "activity_fedavg.toml", "same, seed 3", seed=3),
    Example("digits", "digits_fedavg.toml", "`digits_fedavg.toml` (Dirichlet 0.5, MLP)"),
    Example(
        "breast_cancer",
        "breast_cancer_silo.toml",
        "`breast_cancer_silo.toml` (5 silos, 2 processes)",
    ),
    Example(
        "synthetic", "synthetic_fedavg.toml", "`synthetic_fedavg.toml` (FedProx Synthetic(1,1))"
    ),
    Example(
        "synthetic_fedprox",
        "synthetic_fedprox.toml",
        "`synthetic_fedprox.toml` (FedProx mu = 1, 50% stragglers kept)",
    ),
    Example(
        "activity_compressed",
        "activity_compressed.toml",
        "`activity_compressed.toml` (2-bit up, 8-bit down)",
    ),
    Example(
        "digits_robust",
        "digits_robust.toml",
        "`digits_robust.toml` (centered clipping, 20% sign flippers)",
    ),
    Example(
        "churn_silo",
        "churn_silo.toml",
        "`churn_silo.toml` (3 clubs' raw churn table, federated preprocessing)",
    ),
    # not quoted in the tables; recorded so that its trained model is pinned too
    # (activity_private.toml draws secure, unseeded DP noise: no two runs are equal)
    Example(
        "activity_personalized",
        "activity_personalized.toml",
        "`activity_personalized.toml` (SCAFFOLD + Ditto, stragglers, a deadline)",
        listed=False,
    ),
)


def machine_kind() -> dict[str, str]:
    """What decides the floating-point results: CPU, torch's kernels, the BLAS core, numpy."""
    info: dict[str, str] = {"machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        import torch

        info["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except ImportError:
        info["torch_cpu_capability"] = "no torch"
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        kinds = sorted({f"{i['internal_api']} {i.get('architecture')}" for i in blas})
        info["blas"] = ", ".join(kinds) or "none loaded"
    except ImportError:
        info["blas"] = "unknown"
    import numpy as np

    info["numpy"] = np.__version__
    return info


def run_example(example: Example, *, output_dir: Path, lakehouse: bool = True) -> dict[str, Any]:
    """Run one example in this process and return what its summary shows, with wall time."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from fedlake.config import parse_config, read_raw
    from fedlake.lakehouse.report import attempt_rows, final_rounds, traffic_factor
    from fedlake.run.experiment import run_experiment

    raw = read_raw(ROOT / "examples" / example.config)
    raw["output_dir"] = str(output_dir)
    data = raw.get("data", {})
    if "path" in data and not Path(data["path"]).is_absolute():  # relative to the repository
        data["path"] = str(ROOT / data["path"])
    if example.seed is not None:
        raw["seed"] = example.seed
    if not lakehouse:
        raw.setdefault("lakehouse", {}).update({"mlflow": False, "delta": False})
    cfg = parse_config(raw)
    start = time.perf_counter()
    outcome = run_experiment(cfg)
    wall = time.perf_counter() - start
    res = outcome.result
    rows = final_rounds(res.history)
    last = rows[-1] if rows else {}
    attempts = attempt_rows(res.history)
    return {
        "config": example.config,
        "seed": cfg.seed,
        "stop_reason": res.stop_reason,
        "rounds": len(rows),
        "target_accuracy": cfg.federation.target_accuracy,
        "final_accuracy": _round(last.get("eval_accuracy")),
        "best_accuracy": _round(res.best_accuracy),
        "best_round": res.best_round,
        "upload_factor": _round(traffic_factor(attempts, "bytes_up", "upload_ratio"), 3),
        "download_factor": _round(traffic_factor(attempts, "bytes_down", "download_ratio"), 3),
        "pooled_accuracy": _round(outcome.baseline.pooled_accuracy) if outcome.baseline else None,
        # The trained models themselves, bit for bit: refactors (the client/server seam)
        # must leave every example's final and best global model unchanged.
        "model_sha256": model_digest(res.state.params),
        "best_model_sha256": model_digest(res.best_params),
        "wall_s": round(wall, 1),
    }


def model_digest(params: Any) -> str | None:
    """The first 16 hex digits of the SHA-256 of a parameter vector's dtype, shape and bytes."""
    if params is None:
        return None
    import hashlib

    import numpy as np

    arr = np.ascontiguousarray(params)
    head = f"{arr.dtype.str}{arr.shape}".encode()
    return hashlib.sha256(head + arr.tobytes()).hexdigest()[:16]


def _round(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# ---------------------------------------------------------------- tables


def _stops(r: dict[str, Any], *, target_note: bool) -> str:
    if r["stop_reason"] == "target_reached":
        target = f" {r['target_accuracy']:.0%}" if target_note else ""
        text = f"round {r['rounds']}, target{target} reached"
    else:
        text = f"round {r['rounds']} ({r['stop_reason'].replace('_', ' ')})"
    up, down = r.get("upload_factor"), r.get("download_factor")
    if up and down and (up > 1.05 or down > 1.05):
        text += f", {up:.1f}x fewer bytes up, {down:.1f}x down"
    return text


def _pct(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def render(recorded: dict[str, Any], *, table: str) -> str:
    """The Markdown table ``readme`` (one decimal) or ``results`` (two) of a recorded JSON."""
    runs = recorded["runs"]
    digits = 1 if table == "readme" else 2
    lines = ["| run | stops at | accuracy | wall time |", "|---|---|---|---|"]
    seeds = [runs[k] for k in ("activity_seed1", "activity_seed2", "activity_seed3") if k in runs]
    for ex in EXAMPLES:
        if ex.key not in runs or ex.key.startswith("activity_seed") or not ex.listed:
            continue
        r = runs[ex.key]
        wall = f"{r['wall_s']:.0f} s"
        accuracy = _pct(r["final_accuracy"], digits)
        if r.get("pooled_accuracy") is not None:
            accuracy += f" (pooled training: {_pct(r['pooled_accuracy'], digits)})"
        lines.append(f"| {ex.label} | {_stops(r, target_note=table != 'readme')} | "
                     f"{accuracy} | {wall} |")  # fmt: skip
        if ex.key == "activity" and seeds:
            reached = all(s["stop_reason"] == "target_reached" for s in seeds)
            rounds = " / ".join(str(s["rounds"]) for s in seeds)
            accs = " / ".join(f"{100 * s['final_accuracy']:.{digits}f}" for s in seeds)
            walls = sorted(s["wall_s"] for s in seeds)
            lines.append(
                f"| same, seeds 1 / 2 / 3 | rounds {rounds}"
                f"{', target reached' if reached else ''} | {accs}% | "
                f"{walls[0]:.0f}-{walls[-1]:.0f} s |"
            )
    kind = recorded["machine_kind"]
    head = recorded["git_head"]
    listed = {e.key for e in EXAMPLES if e.listed}
    later = [
        f"{k}: {r['git_head'][:10]}"
        for k, r in runs.items()
        if k in listed and r.get("git_head", head) != head
    ]
    lines.append("")
    lines.append(
        f"Recorded {recorded['date']} at {head[:10]}"
        + (f" ({', '.join(later)})" if later else "")
        + f" on {kind['cpu']} "
        f"(torch {kind['torch_cpu_capability']} kernels, {kind['blas']}); wall times include "
        "the MLflow and Delta writes of every round."
    )
    return "\n".join(lines)


def replace_section(text: str, table: str, body: str) -> str:
    """``text`` with the marked section of ``table`` replaced by ``body`` (markers kept)."""
    begin = BEGIN.format(table=table)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no '{begin}' ... '{END}' section to fill")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{END}", text, count=1)


def section(text: str, table: str) -> str:
    """The body between the markers of ``table`` in ``text``."""
    begin = BEGIN.format(table=table)
    start = text.index(begin) + len(begin) + 1
    return text[start : text.index(END, start) - 1]


def write_tables(recorded: dict[str, Any]) -> None:
    """Rewrite README's and docs/results.md's examples tables from ``recorded``."""
    for path, table in ((README, "readme"), (DOC, "results")):
        path.write_text(replace_section(path.read_text(), table, render(recorded, table=table)))


def main(argv: list[str] | None = None) -> int:
    """Run the examples (or a subset), save the JSON, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated example keys; merged into the JSON")
    ap.add_argument("--render", action="store_true", help="print the recorded tables, exit")
    ap.add_argument("--write", action="store_true", help="rewrite README/docs tables")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.render:
        recorded = json.loads(args.out.read_text())
        print(render(recorded, table="readme"), "\n", render(recorded, table="results"), sep="\n")
        return 0
    keys = [e.key for e in EXAMPLES]
    chosen = keys if not args.only else args.only.split(",")
    unknown = sorted(set(chosen) - set(keys))
    if unknown:
        ap.error(f"unknown example(s) {unknown}; accepted: {', '.join(keys)}")
    sys.path.insert(0, str(ROOT / "bench"))
    from _git import git_state

    recorded = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    runs: dict[str, Any] = recorded.get("runs", {})
    with tempfile.TemporaryDirectory(prefix="fedlake-examples-") as tmp:
        for ex in EXAMPLES:
            if ex.key in chosen:
                runs[ex.key] = run_example(ex, output_dir=Path(tmp) / ex.key)
                r = runs[ex.key]
                print(f"{ex.key:20s} {r['stop_reason']:15s} round {r['rounds']:3d}  "
                      f"accuracy {r['final_accuracy']}  {r['wall_s']} s", flush=True)  # fmt: skip
    head, dirty = git_state(ROOT, "src", "examples")
    if recorded and recorded.get("machine_kind") != machine_kind():
        ap.error("--only merges into runs recorded on another machine kind; rerun them all")
    for k in chosen:  # a subset rerun keeps the others' commit: each run says its own
        runs[k]["git_head"] = head
    recorded = {
        "date": recorded.get("date", time.strftime("%Y-%m-%d")),
        "git_head": recorded.get("git_head", head),
        "uncommitted": dirty or recorded.get("uncommitted", False),
        "machine_kind": machine_kind(),
        "runs": {k: runs[k] for k in keys if k in runs},
    }
    if not args.only:
        for r in recorded["runs"].values():
            r.pop("git_head", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(recorded, indent=2) + "\n")
    print(render(recorded, table="readme"))
    if args.write:
        write_tables(recorded)
        print(f"rewrote the tables in {README.name} and {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
