"""One cell of bench/scale.py, in its own process: a federation over a million
procedurally generated wearable users, ``rounds`` rounds of ``cohort`` devices on one
executor; prints one JSON line (round times, clients per second, this driver's peak RSS).

    python bench/_scale_run.py '{"executor": {...}, "cohort": 1000, "rounds": 2, "out": "..."}'
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

POPULATION = 1_000_000


class Clock:
    """Notes each round's start and end (perf_counter)."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.rounds: list[dict[str, Any]] = []

    def run_started(self, **kw: Any) -> None:
        pass

    def round_started(self, *, round: int, attempt: int, cohort_size: int) -> None:
        self.started.setdefault(round, time.perf_counter())

    def client_finished(self, **kw: Any) -> None:
        pass

    def round_finished(self, record: Any) -> None:
        r = int(record["round"])
        self.rounds.append(
            {
                "round": r,
                "seconds": time.perf_counter() - self.started[r],
                "completed": record.get("num_completed"),
            }
        )

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def main() -> int:
    job = json.loads(sys.argv[1])
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from fedlake.config import parse_config
    from fedlake.run import run_experiment

    raw = {
        "name": "scale",
        "seed": 0,
        "output_dir": job["out"],
        "data": {"scenario": "activity", "num_clients": POPULATION, "features": True},
        "model": {"kind": "logreg"},
        "algorithm": {"name": "fedavg", "client_lr": 0.1, "local_epochs": 1, "batch_size": 32},
        "federation": {
            "rounds": job["rounds"],
            "clients_per_round": job["cohort"],
            "eval_clients": 20,
        },
        "executor": job["executor"],
        "lakehouse": {"delta": False, "mlflow": False},
    }
    clock = Clock()
    run_experiment(parse_config(raw), observer=clock)  # type: ignore[arg-type]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rounds": clock.rounds, "driver_peak_rss": peak}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
