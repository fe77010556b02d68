"""Flower's side of bench/vs_flower_simulation.py: one FedAvg run in Flower's simulation engine.

Runs with the Flower interpreter (.venv-flower/bin/python, which has ``flwr[simulation]``
and so Ray; Flower is not installed in .venv, where it would downgrade protobuf and break
MLflow). The clients train with fedlake's own code: ``LogRegTrainer`` (its numba-compiled
loop; .venv-flower has the same numba) and the FedProx Synthetic generator are imported
from fedlake's sources (``src`` on the path, also through PYTHONPATH for Ray's workers;
their import chain needs numpy and numba only), so the per-client computation is the same
on both sides and the comparison measures the frameworks around it.

* ServerApp: Flower's message-API ``FedAvg`` (``flwr.serverapp.strategy``), weighted by
  ``num-examples``, ``fraction_train = cohort / population`` with ``min_train_nodes =
  cohort`` (so exactly ``cohort`` clients train every round), ``fraction_evaluate = 0``
  (no client-side evaluation) and a centralized ``evaluate_fn`` on the concatenated test
  splits of every device (``EvalSet``'s concatenation: the same set fedlake evaluates on).
  Flower samples with Python's ``random``, seeded with the job's seed; the node ids it
  samples from are random (drawn at registration), so its cohorts still differ from run
  to run. With ``"replay"`` in the job, Flower samples fedlake's cohorts instead and the
  clients use fedlake's generators (``ReplaySampler``): a diagnostic run.
* ClientApp: supernode ``partition-id`` k trains device k of the population; its rng is
  ``np.random.default_rng([seed, round, k])``.
* Ray backend, ``num_supernodes = population``, each ClientApp ``num_cpus`` CPUs (1 on a
  2-core machine: 2 clients train at once), Ray initialised with ``ray_num_cpus``.

    .venv-flower/bin/python bench/_flower_sim.py JOB.json

JOB.json: {"src": fedlake's src dir, "population": int, "cohort": int, "rounds": int,
"alpha": float, "beta": float, "data_seed": int, "seed": int, "lr": float, "epochs": int,
"batch_size": int, "client_cpus": float, "ray_num_cpus": int, "out": path.json, and
optionally "replay": {"cohort_tag": int, "client_tag": int} and "workload": "synthetic"
(default) or "activity" (bench/scale.py: the activity scenario's wearable users, 40 window
features, evaluated on the first 20 users' test windows)}.
Writes ``out``: wall time of ``run_simulation`` (Ray's start-up and shut-down included),
the time the evaluation of each round finished (relative to the call), final accuracy
and loss, versions.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import resource
import sys
import time
import zlib
from pathlib import Path
from typing import Any

JOB: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text()) if __name__ == "__main__" else {}
if JOB:  # fedlake's sources and this module, here and (through PYTHONPATH) in Ray's workers
    _paths = [JOB["src"], str(Path(__file__).resolve().parent)]
    sys.path[:0] = _paths
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*_paths, *filter(None, [os.environ.get("PYTHONPATH")])]
    )

import flwr  # noqa: E402
import numpy as np  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from fedlake.client.logreg import LogRegTrainer  # noqa: E402
from fedlake.core.algorithm import LocalConfig  # noqa: E402
from fedlake.data.activity import ACTIVITIES, FEATURE_NAMES, ActivityPopulation  # noqa: E402
from fedlake.data.synthetic import DIMENSION, NUM_CLASSES, fedprox_synthetic  # noqa: E402

TRAINERS = {
    "synthetic": LogRegTrainer(DIMENSION, NUM_CLASSES),
    "activity": LogRegTrainer(len(FEATURE_NAMES), len(ACTIVITIES)),
}
EVAL_USERS = 20  # activity: the global model is evaluated on this many users' test windows


@functools.cache
def population(alpha: float, beta: float, devices: int, seed: int, workload: str) -> Any:
    """The FedProx Synthetic population, or the activity scenario's wearable users
    (procedural: a user's data is generated when loaded), once per process."""
    if workload == "activity":
        return ActivityPopulation(devices, seed=seed, features=True)
    return fedprox_synthetic(alpha, beta, num_devices=devices, seed=seed)


def train(msg: Message, context: Context) -> Message:
    """Local SGD of supernode ``partition-id``'s device, with fedlake's trainer."""
    cfg = msg.content["config"]
    k = int(context.node_config["partition-id"])
    workload = str(cfg["workload"])
    data = population(float(cfg["alpha"]), float(cfg["beta"]), int(cfg["population"]),
                      int(cfg["data-seed"]), workload)  # fmt: skip
    ds = data.load(data.client_ids()[k])
    params = msg.content["arrays"].to_numpy_ndarrays()[0]
    local = LocalConfig(
        epochs=int(cfg["epochs"]), batch_size=int(cfg["batch-size"]), lr=float(cfg["lr"])
    )
    if "client-tag" in cfg:  # replaying fedlake's draws: its client generator
        cid = data.client_ids()[k]
        key = zlib.crc32(cid.encode("utf-8"))
        rng = np.random.default_rng(
            [int(cfg["seed"]), int(cfg["server-round"]) - 1, int(cfg["client-tag"]), 0, key]
        )
    else:
        rng = np.random.default_rng([int(cfg["seed"]), int(cfg["server-round"]), k])
    fit = TRAINERS[workload].fit(params, ds.x_train, ds.y_train, config=local, rng=rng)
    content = RecordDict(
        {
            "arrays": ArrayRecord([np.asarray(fit.params)]),
            "metrics": MetricRecord({"num-examples": fit.num_examples, "train_loss": fit.loss}),
        }
    )
    return Message(content=content, reply_to=msg)


class ReplaySampler:
    """Stands in for the ``random`` module of Flower's node sampling: picks fedlake's cohort.

    Round r's cohort is fedlake's ``sample_cohort``: ``rng.choice(n, k, replace=False)``,
    sorted, with ``rng = default_rng([seed, r - 1, cohort_tag, 0])``, mapped from
    partition ids to the node ids the simulation registered for them.
    """

    def __init__(self, seed: int, cohort_tag: int, nodes: dict[int, int]) -> None:
        self.seed, self.tag, self.nodes = seed, cohort_tag, nodes
        self.round = 0

    def sample(self, all_nodes: list[int], k: int) -> list[int]:
        node_of = {part: node for node, part in self.nodes.items()}
        rng = np.random.default_rng([self.seed, self.round, self.tag, 0])
        self.round += 1
        idx = np.sort(rng.choice(len(all_nodes), size=k, replace=False))
        return [node_of[int(i)] for i in idx]


def replay_fedlake_draws(job: dict[str, Any]) -> None:
    """Make Flower sample fedlake's cohorts (a diagnostic: the accuracy gap without luck)."""
    import flwr.server.superlink.fleet.vce.vce_api as vce
    import flwr.serverapp.strategy.strategy_utils as sampling

    nodes: dict[int, int] = {}
    register = vce._register_nodes

    def recording(*args: Any, **kwargs: Any) -> Any:
        mapping = register(*args, **kwargs)
        nodes.update(mapping)
        return mapping

    vce._register_nodes = recording
    sampling.random = ReplaySampler(job["seed"], job["replay"]["cohort_tag"], nodes)  # type: ignore[assignment]


def build_client_app() -> ClientApp:
    app = ClientApp()
    app.train()(train)
    return app


def build_server_app(job: dict[str, Any], log: dict[str, Any], t0: float) -> ServerApp:
    """The ServerApp: FedAvg for ``job['rounds']`` rounds, centralized evaluation."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(job["seed"])  # Flower's node sampling uses the random module
        log["server_started_s"] = time.perf_counter() - t0
        workload = job.get("workload", "synthetic")
        trainer = TRAINERS[workload]
        data = population(job["alpha"], job["beta"], job["population"], job["data_seed"],
                          workload)  # fmt: skip
        ids = data.client_ids()
        xs, ys = [], []
        for cid in ids[:EVAL_USERS] if workload == "activity" else ids:
            ds = data.load(cid)
            if ds.num_test:
                xs.append(ds.x_test)
                ys.append(ds.y_test)
        x_test, y_test = np.concatenate(xs), np.concatenate(ys)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            ev = trainer.evaluate(arrays.to_numpy_ndarrays()[0], x_test, y_test)
            log["rounds"].append(
                {
                    "round": server_round,
                    "t": time.perf_counter() - t0,
                    "accuracy": ev["accuracy"],
                    "loss": ev["loss"],
                }
            )
            return MetricRecord({"accuracy": ev["accuracy"], "loss": ev["loss"]})

        strategy = FedAvg(
            fraction_train=job["cohort"] / job["population"],
            fraction_evaluate=0.0,
            min_train_nodes=job["cohort"],
            min_available_nodes=job["population"],
        )
        train_config = ConfigRecord(
            {
                "alpha": float(job["alpha"]),
                "beta": float(job["beta"]),
                "population": int(job["population"]),
                "data-seed": int(job["data_seed"]),
                "seed": int(job["seed"]),
                "lr": float(job["lr"]),
                "epochs": int(job["epochs"]),
                "batch-size": int(job["batch_size"]),
                "workload": workload,
            }
            | ({"client-tag": int(job["replay"]["client_tag"])} if job.get("replay") else {})
        )
        initial = ArrayRecord([trainer.init_params(job["seed"])])
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=job["rounds"],
            train_config=train_config,
            evaluate_fn=evaluate,
        )
        log["server_finished_s"] = time.perf_counter() - t0

    return app


def main() -> int:
    job = JOB
    # Flower logs every round at INFO; keep the benchmark's output readable
    logging.getLogger("flwr").setLevel(logging.WARNING)
    log: dict[str, Any] = {"rounds": []}
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": job["client_cpus"], "num_gpus": 0.0},
        "init_args": {
            "num_cpus": job["ray_num_cpus"],
            "num_gpus": 0,
            "include_dashboard": False,
            "log_to_driver": False,
        },
    }
    # the apps come from this file imported as a module, not from __main__: Ray pickles
    # functions of __main__ by value, those of a module by reference (workers import it)
    import _flower_sim as this

    if job.get("replay"):
        this.replay_fedlake_draws(job)
    t0 = time.perf_counter()
    run_simulation(
        server_app=this.build_server_app(job, log, t0),
        client_app=this.build_client_app(),
        num_supernodes=job["population"],
        backend_config=backend_config,
    )
    wall = time.perf_counter() - t0
    import ray

    report = {
        "flwr": flwr.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "blas_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "backend_config": backend_config,
        "wall_s": wall,
        "driver_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        **log,
    }
    Path(job["out"]).write_text(json.dumps(report, indent=1))
    return 0 if log.get("server_finished_s") is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
