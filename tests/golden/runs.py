"""Small federations over every feature, and what they produce to the bit.

Each run is a config a user could write (lakehouse off, a few rounds on scikit-learn's
digits or a small activity population). :func:`outcome` runs one and reduces what a
user sees to digests: the final and best models, every round's model row, the rounds
(history) and the client_updates rows, with wall times and timestamps left out.
``tests/golden/record.py`` writes them to ``golden_runs.json``; the test
``tests/integration/test_golden_runs.py`` reruns every one and compares. Refactors of
the round, the client runtime or the executors must leave every digest unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

TIME_KEYS = frozenset({"duration_s", "created_at", "time", "run_id"})

BASE: dict[str, Any] = {
    "seed": 3,
    "data": {"scenario": "digits", "num_clients": 12, "partition": "dirichlet", "alpha": 0.5},
    "model": {"kind": "mlp", "hidden": [16]},
    "algorithm": {"name": "fedavg", "client_lr": 0.1, "local_epochs": 2, "batch_size": 16},
    "federation": {"rounds": 4, "clients_per_round": 6},
    "lakehouse": {"delta": False, "mlflow": False},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


LOGREG = {"model": {"kind": "logreg", "hidden": None}}
ACTIVITY = {
    "data": {"scenario": "activity", "num_clients": 20, "partition": None, "alpha": None},
    "model": {"kind": "cnn1d", "hidden": None},
    "algorithm": {"client_lr": 0.2, "batch_size": 32},
    "federation": {"clients_per_round": 5},
}

RUNS: dict[str, dict[str, Any]] = {
    "fedavg_mlp": {},
    "fedavg_logreg": LOGREG,
    "fedavg_mlp_loop": {"executor": {"vectorize": False}},
    "fedavg_process": {"executor": {"kind": "process", "workers": 2}},
    "activity_cnn": ACTIVITY,
    "fedprox_stragglers_keep": {
        "algorithm": {"name": "fedprox", "mu": 0.1, "local_epochs": 3},
        "federation": {"stragglers": 0.5, "dropout": 0.2},
    },
    "fedavg_deadline_drop": {
        "federation": {"deadline_s": 0.3, "straggler_policy": "drop", "speed_spread": 1.0},
    },
    "scaffold_retries": {
        "algorithm": {"name": "scaffold", "local_epochs": 2},
        "federation": {
            "rounds": 5,
            "clients_per_round": 8,
            "dropout": 0.3,
            "min_clients": 6,
            "max_retries": 3,
        },
    },
    "scaffold_logreg_process": _merge(
        LOGREG, {"algorithm": {"name": "scaffold"}, "executor": {"kind": "process"}}
    ),
    "fednova": {"algorithm": {"name": "fednova", "mu": 0.05, "local_epochs": 2}},
    "fedadam": {"algorithm": {"name": "fedadam", "server_lr": 0.05}},
    "fedper": {"personalization": {"kind": "fedper", "layers": ["out.weight", "out.bias"]}},
    "ditto_scaffold": {
        "algorithm": {"name": "scaffold"},
        "personalization": {"kind": "ditto", "lam": 0.5},
    },
    "finetune": {"personalization": {"kind": "finetune", "epochs": 1}},
    "error_feedback_topk": {
        "compression": {
            "upload": [
                {"kind": "topk", "ratio": 0.1},
                {"kind": "quantize", "bits": 4, "bucket": 64},
            ],
            "download": [{"kind": "quantize", "bits": 8}],
            "error_feedback": True,
        }
    },
    "structured_mask": {"compression": {"upload": [{"kind": "structured_mask", "ratio": 0.2}]}},
    "random_mask_pruned": {
        "compression": {
            "upload": [{"kind": "random_mask", "ratio": 0.3}],
            "prune": {"sparsity": 0.5, "start_round": 1},
        }
    },
    "central_dp": {
        "federation": {"rounds": 3},
        "privacy": {"epsilon": 20.0, "noise": "seeded"},
    },
    "central_dp_fixed_clip_stops": {
        "federation": {"rounds": 8},
        "privacy": {
            "noise_multiplier": 2.0,
            "epsilon": 10.0,
            "adaptive": False,
            "clip": 1.0,
            "sampling": "fixed",
            "noise": "seeded",
        },
    },
    "local_dp": {
        "privacy": {"mechanism": "local", "noise_multiplier": 0.5, "clip": 1.0, "noise": "seeded"},
    },
    "dpsgd_budget": {
        "federation": {"rounds": 4},
        "privacy": {
            "mechanism": "dpsgd",
            "noise_multiplier": 1.0,
            "clip": 1.0,
            "epsilon": 8.0,
            "noise": "seeded",
        },
    },
    "label_flip_trimmed_mean": {
        "algorithm": {"aggregator": {"kind": "trimmed_mean"}},
        "attack": {"kind": "label_flip", "fraction": 0.34},
    },
    "backdoor_krum": {
        "algorithm": {"aggregator": {"kind": "krum"}},
        "federation": {"clients_per_round": 8},
        "attack": {"kind": "backdoor", "fraction": 0.25},
    },
    "alie_median_dropout": {
        "algorithm": {"aggregator": {"kind": "median"}},
        "federation": {"dropout": 0.3},
        "attack": {"kind": "alie", "fraction": 0.34},
    },
    "sign_flip_centered_clip_process": {
        "algorithm": {"aggregator": {"kind": "centered_clip"}},
        "executor": {"kind": "process"},
        "attack": {"kind": "sign_flip", "fraction": 0.34},
    },
}


def config(name: str) -> dict[str, Any]:
    """The run config of golden run ``name``."""
    return _merge(BASE, {"name": f"golden-{name.replace('_', '-')}", **RUNS[name]})


def digest(value: Any) -> str:
    """The first 16 hex digits of the SHA-256 of bytes, an array or a JSON-able value."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        data = f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes()
    elif isinstance(value, bytes):
        data = value
    else:
        data = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in TIME_KEYS}


def outcome(name: str, output_dir: Path) -> dict[str, Any]:
    """Run golden run ``name`` under ``output_dir``; what it produced, as digests."""
    from fedlake.config import parse_config
    from fedlake.orchestration.sinks import RunSinks
    from fedlake.run import build_federation, prepare_run_dir
    from fedlake.testing import MemoryStore

    cfg = parse_config({**config(name), "output_dir": str(output_dir)})
    federation = build_federation(cfg, observer=_Quiet())
    prepare_run_dir(cfg, resume=False)
    store = MemoryStore()
    federation.sinks = RunSinks(run_id="", store=store)
    result = federation.run()
    models = store.read("models")
    clients = sorted(
        (_clean(r) for r in store.read("client_updates")),
        key=lambda r: (r["round"], r["attempt"], r["client_id"]),
    )
    final = result.history[-1] if result.history else {}
    return {
        "stop_reason": result.stop_reason,
        "rounds": result.state.round,
        "final_accuracy": final.get("eval_accuracy"),
        "model": digest(np.asarray(result.state.params)),
        "best_model": None if result.best_params is None else digest(result.best_params),
        # a row's params are the state vector (a store converts them): digest their bytes
        "round_models": digest([digest(np.asarray(r["params"], "<f4").tobytes()) for r in models]),
        "history": digest([_clean(h) for h in result.history]),
        "client_rows": digest(clients),
    }


class _Quiet:
    """An observer that ignores everything."""

    def run_started(self, **_: Any) -> None: ...
    def round_started(self, **_: Any) -> None: ...
    def client_finished(self, **_: Any) -> None: ...
    def round_finished(self, record: Any) -> None: ...
    def message(self, text: str) -> None: ...
