"""fedlake's side of bench/network.py: the deployed server, timed, and the clients' inputs.

:func:`prepare` writes what a deployed federation of N clients needs (examples/network's
layout): a run config (scenario ``remote``, FedAvg, a logistic regression whose flat
parameter vector has the cell's size), one small Parquet table per client and the
credentials (``fedlake certs``' local CA, server certificate and client keys).

Run as a script, this file is the server: ``fedlake.run.deploy.serve`` — what
``fedlake server --config CFG --certs DIR --port P`` runs (the CLI adds only its console
observer) — with an observer that notes when each round starts (the attempt opens: its
task is published to the long-polling clients right after) and when it finishes (the
``round_finished`` event: the aggregate applied and the round's checkpoint written), on
``time.perf_counter``'s clock. The clients
are real ``fedlake client`` processes, started by bench/network.py.

    python bench/_net_fedlake.py JOB.json

JOB.json: {"config": path, "certs": dir, "port": int, "tls": bool, "out": path}.
Writes ``out``: each round's start, end and ``duration_s`` (the server's own record of
the round: the rounds table's column), the stop reason.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

FEATURES = 999  # + 1 bias: 1,000 inputs per class; the classes set the model's size
FLOAT_BYTES = 4


def model_shape(model_bytes: int) -> tuple[int, int]:
    """``(features, classes)`` of a logistic regression of ``model_bytes`` float32 bytes."""
    classes = max(2, round(model_bytes / FLOAT_BYTES / (FEATURES + 1)))
    return FEATURES, classes


def run_config(*, clients: int, model_bytes: int, rounds: int, out_dir: Path,
               timeout_s: float) -> dict[str, Any]:  # fmt: skip
    """The deployed run's config: FedAvg over every client every round, nothing else."""
    features, classes = model_shape(model_bytes)
    return {
        "name": f"net-{model_bytes}-{clients}",
        "seed": 0,
        "output_dir": str(out_dir),
        "data": {"scenario": "remote", "input_shape": [features], "num_classes": classes},
        "model": {"kind": "logreg"},
        "algorithm": {"name": "fedavg", "client_lr": 0.01, "local_epochs": 1, "batch_size": 1},
        "federation": {"rounds": rounds, "clients_per_round": clients},
        "deployment": {"round_timeout_s": timeout_s, "linger_s": 2, "long_poll_s": 25},
        "lakehouse": {"delta": False, "mlflow": False},
    }


def toml(cfg: dict[str, Any]) -> str:
    """``cfg`` (scalars, lists, one level of tables) as TOML."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for section, table in cfg.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def client_ids(n: int) -> list[str]:
    return [f"c{i:03d}" for i in range(n)]


def prepare(folder: Path, *, clients: int, model_bytes: int, rounds: int,
            timeout_s: float) -> tuple[Path, list[str]]:  # fmt: skip
    """Config, tables and credentials of a cell under ``folder``; the config and client ids.

    Each client's table holds 2 rows (one train, one test): local training is one SGD step
    on one example, so the round measures the framework, not the training.
    """
    import numpy as np

    from fedlake.backends.remote.certs import make_certs
    from fedlake.data.base import ClientDataset, InMemoryClientData
    from fedlake.data.table_write import write_client_table

    ids = client_ids(clients)
    features, classes = model_shape(model_bytes)
    rng = np.random.default_rng(0)
    for k, cid in enumerate(ids):
        x = rng.normal(size=(2, features)).astype(np.float32)
        y = np.array([k % classes, (k + 1) % classes], dtype=np.int64)
        ds = ClientDataset(x[:1], y[:1], x[1:], y[1:])
        write_client_table(InMemoryClientData({cid: ds}), folder / "data" / cid,
                           format="parquet", partition_by_client=False)  # fmt: skip
    make_certs(folder / "certs", ids, hosts=["localhost"])
    cfg = run_config(clients=clients, model_bytes=model_bytes, rounds=rounds,
                     out_dir=folder / "runs", timeout_s=timeout_s)  # fmt: skip
    path = folder / "served.toml"
    path.write_text(toml(cfg))
    return path, ids


class Clock:
    """A run observer that notes each round's start and finish (perf_counter)."""

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
        end = time.perf_counter()
        r = int(record["round"])
        self.rounds.append(
            {
                "round": r,
                "start": self.started.get(r),
                "end": end,
                "duration_s": record.get("duration_s"),
                "num_completed": record.get("num_completed"),
                "bytes_up": record.get("bytes_up"),
                "bytes_down": record.get("bytes_down"),
            }
        )
        print(f"round {r}: {end - self.started.get(r, end):.3f} s", flush=True)

    def message(self, text: str) -> None:
        print(text, flush=True)


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    from fedlake.config import parse_config, read_raw
    from fedlake.run.deploy import serve

    cfg = parse_config(read_raw(Path(job["config"])))
    clock = Clock()
    t0 = time.perf_counter()
    outcome = serve(cfg, Path(job["certs"]), host="127.0.0.1", port=int(job["port"]),
                    tls=bool(job["tls"]), observer=clock)  # type: ignore[arg-type]  # fmt: skip
    out = {
        "rounds": clock.rounds,
        "serve_s": time.perf_counter() - t0,
        "stop_reason": outcome.result.stop_reason,
        "tls": bool(job["tls"]),
    }
    Path(job["out"]).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
