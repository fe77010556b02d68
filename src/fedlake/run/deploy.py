"""``fedlake server``: the same run config, served to clients that bring their own data.

:func:`build_served` makes the Federation of a deployed run (its population: the enrolled
clients; its executor: remote clients through the :class:`Coordinator`; no simulation:
no population model, no attackers, no central evaluation); :func:`serve` runs it in a
thread while the HTTP server answers the clients, and stops the server once every client
had time to hear the run ended.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlake.algorithms.spec import build_algorithm
from fedlake.backends.remote.auth import Registry
from fedlake.backends.remote.certs import REGISTRY, TOKEN
from fedlake.backends.remote.coordinator import Coordinator
from fedlake.backends.remote.executor import BufferedRemoteExecutor, RemoteExecutor
from fedlake.config import ConfigError, RemoteData, RunConfig
from fedlake.orchestration.buffered import SECURE_WITH_FEDBUFF, check_buffered
from fedlake.orchestration.checkpoint import load_checkpoint
from fedlake.orchestration.events import NullObserver, RunObserver
from fedlake.orchestration.federation import Federation
from fedlake.orchestration.interfaces import Executor
from fedlake.orchestration.sampling import CohortSpec
from fedlake.run.build import (
    Experiment,
    cohort_spec,
    config_section,
    fedbuff_of,
    privacy_of,
    recipe_spec,
    run_params,
    secure_settings,
)
from fedlake.run.experiment import RunOutcome, run_dir_of, run_experiment
from fedlake.run.scenarios import Scenario, build_trainer, model_config

__all__ = ["Served", "build_served", "serve"]

# settings that only a simulation has: a deployed federation has real clients
SIMULATION_ONLY = {
    ("federation", "dropout"): 0.0,
    ("federation", "stragglers"): 0.0,
    ("federation", "deadline_s"): None,
    ("federation", "pooled_baseline"): False,
    ("federation", "eval_clients"): None,
    ("federation", "holdout_clients"): 0,
}


@dataclass
class Served:
    """A deployed run: its Federation, the coordinator its HTTP server shares, the clients'
    registry, and what a joining client is told."""

    federation: Federation
    coordinator: Coordinator
    registry: Registry
    info: dict[str, Any]
    experiment: Experiment


def _check_deployable(cfg: RunConfig) -> RemoteData:
    if not isinstance(cfg.data, RemoteData):
        raise ConfigError(
            f"data: fedlake server needs scenario = 'remote' (clients bring their own data), "
            f"got {cfg.data.scenario!r}"
        )
    if cfg.attack is not None:
        raise ConfigError("attack: simulated attackers are for fedlake run, not a deployment")
    for (section, key), default in SIMULATION_ONLY.items():
        if getattr(getattr(cfg, section), key) != default:
            raise ConfigError(
                f"{section}.{key} simulates clients; a deployed federation has real ones: "
                "remove it (the deployment section sets the round's timeout)"
            )
    return cfg.data


def build_served(
    cfg: RunConfig, certs: Path, *, observer: RunObserver | None = None, resume: bool = False
) -> Served:
    """The deployed run of ``cfg`` over the clients enrolled in ``certs``."""
    observer = observer or NullObserver()
    data = _check_deployable(cfg)
    with config_section("certs"):
        registry = Registry(certs / REGISTRY)
        clients = registry.enrolled()
        if not clients:
            raise ValueError(f"no client is enrolled in {certs / REGISTRY}")
    scenario = Scenario(None, tuple(data.input_shape), data.num_classes)  # type: ignore[arg-type]
    with config_section("model"):
        mcfg = model_config(cfg.model, scenario)
        trainer = build_trainer(mcfg)
    fed = cfg.federation
    buff = fedbuff_of(cfg, len(clients))
    cohort = cohort_spec(cfg) if buff is None else CohortSpec(count=buff.buffer)
    with config_section("federation"):
        size = cohort.size(len(clients))
    # FedBuff's steps take whoever arrives, not a sample the server drew: no amplification
    # by sampling is claimed (each step is accounted as if every client were in it)
    population = len(clients) if buff is None else size
    dp, plan = privacy_of(cfg, mcfg, population, size, observer)
    spec = recipe_spec(cfg, attackers=None, dp=dp, trainer_spec=trainer.spec)
    algorithm = build_algorithm(spec)
    secure = secure_settings(cfg, dp)  # the simulator's refusals: Federation's check_secure
    if buff is not None:
        with config_section("fedbuff"):
            if secure is not None:
                raise ValueError(SECURE_WITH_FEDBUFF)
            check_buffered(algorithm)
    run_dir = run_dir_of(cfg)
    ckpt = load_checkpoint(run_dir) if resume and run_dir.exists() else None
    run_id = ckpt.run_id if ckpt is not None else uuid.uuid4().hex[:12]
    coordinator = Coordinator(run_id)
    for row in ckpt.history if ckpt is not None else []:  # the status page's chart, resumed
        if row.get("status") == "completed":
            coordinator.record_round(row)
    for cid in clients:  # the population this run starts with, in its audit log
        coordinator.audit("fedlake.server", "client.enrolled", cid, registry.entry(cid))
    timeout = cfg.deployment.round_timeout_s
    section = cfg.secure()
    key_timeout = section.key_stage_timeout_s if section is not None else None
    executor: Executor = (
        RemoteExecutor(
            coordinator,
            round_timeout_s=timeout,
            key_stage_timeout_s=key_timeout,
        )
        if buff is None
        else BufferedRemoteExecutor(coordinator, round_timeout_s=timeout, settings=buff)
    )
    with config_section("federation"):
        federation = Federation(
            algorithm=algorithm,
            trainer=trainer,
            client_ids=clients,
            executor=executor,
            run_dir=run_dir,
            rounds=fed.rounds,
            cohort=cohort,
            seed=cfg.seed,
            min_clients=fed.min_clients,
            max_retries=fed.max_retries,
            target_accuracy=fed.target_accuracy,
            observer=observer,
            model_config=mcfg,
            run_params=run_params(cfg, dp),
            privacy=plan,
            run_id=run_id,
            audit_feeds=(coordinator.drain_audit,),
            secure=secure,
        )
    info = {
        "run": run_id,
        "name": cfg.name,
        "spec": json.loads(spec.to_json()),
        "model_config": mcfg,
        "data": {
            "label_column": data.label_column,
            "client_column": data.client_column,
            "feature_columns": None if data.feature_columns is None else list(data.feature_columns),
            "test_fraction": data.test_fraction,
            "input_shape": list(data.input_shape),
        },
        "deployment": {"heartbeat_s": cfg.deployment.heartbeat_s},
        "straggler_policy": fed.straggler_policy,
    }
    experiment = Experiment(federation, scenario, spec, rounds_ended=coordinator.finish)
    return Served(federation, coordinator, registry, info, experiment)


def serve(
    cfg: RunConfig,
    certs: Path,
    *,
    host: str,
    port: int,
    tls: bool,
    resume: bool = False,
    observer: RunObserver | None = None,
    ready: threading.Event | None = None,
) -> RunOutcome:
    """Serve ``cfg``'s federation on ``host:port`` until it ends; its outcome."""
    import uvicorn

    from fedlake.backends.remote.app import Limits, create_app

    observer = observer or NullObserver()
    served = build_served(cfg, certs, observer=_Forward(observer, None), resume=resume)
    served.federation.observer = _Forward(observer, served.coordinator)
    token = operator_token(certs)
    outcome: dict[str, Any] = {}
    d = cfg.deployment

    def rounds() -> None:
        try:
            outcome["result"] = run_experiment(
                cfg,
                resume=resume,
                observer=served.federation.observer,
                build=lambda *_, **__: served.experiment,
            )
            served.coordinator.finish(outcome["result"].result.stop_reason)
        except BaseException as exc:  # the server must stop and say why
            outcome["error"] = exc
            served.coordinator.finish(f"error: {type(exc).__name__}: {exc}")
        timer = threading.Timer(d.linger_s, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()

    def start() -> None:
        threading.Thread(target=rounds, name="fedlake-rounds", daemon=True).start()
        if ready is not None:
            ready.set()

    app = create_app(
        served.coordinator,
        served.registry,
        operator_token=token,
        federation_info=served.info,
        limits=Limits(
            max_body_mb=d.max_body_mb,
            requests_per_s=d.requests_per_s,
            max_waiting=d.max_waiting,
            long_poll_s=d.long_poll_s,
        ),
        on_start=start,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        ssl_certfile=str(certs / "server.pem") if tls else None,
        ssl_keyfile=str(certs / "server.key") if tls else None,
    )
    server = uvicorn.Server(config)
    server.run()
    late = served.coordinator.drain_audit()  # refused while lingering: after the last commit
    sinks = served.federation.sinks
    if late and sinks is not None and sinks.store is not None:
        sinks.flush({"audit": late})
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise RuntimeError("the server stopped before its federation ended")
    result: RunOutcome = outcome["result"]
    return result


def operator_token(certs: Path) -> str:
    """The operator's token: FEDLAKE_OPERATOR_TOKEN (a Databricks App secret) or the file."""
    given = os.environ.get("FEDLAKE_OPERATOR_TOKEN", "").strip()
    if given:
        if len(given) < 24:
            raise ValueError("FEDLAKE_OPERATOR_TOKEN is too short (24 characters or more)")
        return given
    path = certs / TOKEN
    if not path.exists():
        raise ValueError(
            f"no operator token: {path} is missing and FEDLAKE_OPERATOR_TOKEN is not set"
        )
    return path.read_text().strip()


class _Forward:
    """The console's observer, with each finished round also shown on the status page."""

    def __init__(self, inner: RunObserver, coordinator: Coordinator | None) -> None:
        self.inner, self.coordinator = inner, coordinator

    def run_started(self, **kw: Any) -> None:
        self.inner.run_started(**kw)

    def round_started(self, **kw: Any) -> None:
        self.inner.round_started(**kw)

    def client_finished(self, **kw: Any) -> None:
        self.inner.client_finished(**kw)

    def round_finished(self, record: Any) -> None:
        if self.coordinator is not None:
            self.coordinator.record_round(dict(record))
        self.inner.round_finished(record)

    def message(self, text: str) -> None:
        self.inner.message(text)
