"""The attack-evaluation grid: every attack x malicious fraction x defence, one run each."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from fedlake.config import ConfigError, RunConfig, options, parse_config
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.federation import CohortTooSmallError
from fedlake.simulation.attacks.data_poisoning import Backdoor, backdoor_success


@dataclass(frozen=True)
class Cell:
    """One run of the grid: an attack (with its options), a malicious fraction, a defence."""

    attack: dict[str, Any]
    fraction: float
    defence: dict[str, Any]

    @property
    def attack_label(self) -> str:
        """The attack as shown in tables: its kind and any option the user set."""
        return label(self.attack)

    @property
    def defence_label(self) -> str:
        """The defence as shown in tables."""
        return label(self.defence)

    @property
    def key(self) -> str:
        """A stable id of the cell (results are matched by it on --resume): every option at
        full precision, where the labels round numbers for display."""
        return json.dumps([self.attack, repr(self.fraction), self.defence], sort_keys=True)


def label(spec: dict[str, Any]) -> str:
    """``kind`` or ``kind(option=value, ...)`` for the options the user set."""
    extra = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(spec.items())
        if k not in ("kind", "fraction")
    )
    return f"{spec['kind']}({extra})" if extra else str(spec["kind"])


def grid_cells(cfg: RunConfig) -> list[Cell]:
    """The cells of ``cfg.attack_eval`` in table order (attack, fraction, defence)."""
    if cfg.attack_eval is None:
        raise ConfigError("attack_eval: the config has no [attack_eval] section (the grid)")
    grid = cfg.attack_eval
    return [
        Cell(options(attack), fraction, options(defence))
        for attack in grid.attacks
        for fraction in grid.fractions
        for defence in grid.defences
    ]


def cell_config(base: dict[str, Any], cell: Cell) -> RunConfig:
    """The run config of ``cell``: the base config with the cell's attack and defence.

    The cell runs without Delta or MLflow (the grid logs one MLflow run of its own).
    """
    raw = {k: v for k, v in base.items() if k not in ("attack", "attack_eval")}
    algorithm = dict(raw.get("algorithm") or {})
    algorithm["aggregator"] = cell.defence
    raw["algorithm"] = algorithm
    raw["attack"] = {**cell.attack, "fraction": cell.fraction}
    raw["lakehouse"] = {**dict(raw.get("lakehouse") or {}), "delta": False, "mlflow": False}
    raw["name"] = "cell"
    return parse_config(raw)


def precondition_failed(exc: ConfigError) -> bool:
    """Whether a cell's config error only says its cohort is too small for the defence
    or the attack fraction (the cell is then n/a, not an error of the grid)."""
    return isinstance(exc.__cause__, CohortTooSmallError)


STOPPED_EARLY = "stopped"  # a cell whose run ended before its last round (too few updates)


def run_cell(base: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """Run one cell to the end; its row of the results, whatever happens.

    ``status`` is ``ok``, ``stopped`` (the run ended early, e.g. every update rejected:
    the last completed round's accuracy is shown), ``n/a`` (the defence's or the attack's
    precondition does not hold at this fraction) or ``failed`` (the reason says why).
    """
    row = {k: v for k, v in failed_row(cell, "").items() if k not in ("status", "reason")}
    t0 = time.perf_counter()
    try:
        return {**row, **_run(base, cell), "seconds": time.perf_counter() - t0}
    except ConfigError as exc:
        if not precondition_failed(exc):
            raise  # the grid checks every cell's config before running any
        return {**row, "status": "n/a", "reason": str(exc.__cause__)}
    except Exception as exc:  # one broken cell must not lose the grid's other results
        failed = failed_row(cell, f"{type(exc).__name__}: {exc}")
        return {**failed, "seconds": time.perf_counter() - t0}


def failed_row(cell: Cell, reason: str) -> dict[str, Any]:
    """The results row of a cell that could not produce a model."""
    return {
        "key": cell.key,
        "attack": cell.attack_label,
        "fraction": cell.fraction,
        "defence": cell.defence_label,
        "status": "failed",
        "reason": reason,
    }


def _run(base: dict[str, Any], cell: Cell) -> dict[str, Any]:
    from fedlake.run import build_experiment, run_dir_of  # the runner imports the heavy parts
    from fedlake.simulation import CentralEvaluation

    cfg = cell_config(base, cell)
    with tempfile.TemporaryDirectory(prefix="fedlake-cell-") as scratch:
        cfg = cfg.model_copy(update={"output_dir": scratch})
        experiment = build_experiment(cfg, observer=NullObserver(), run_dir=run_dir_of(cfg))
        federation = experiment.federation
        federation.run_dir.mkdir(parents=True)
        result = federation.run()
        evaluator = federation.evaluator
        assert isinstance(evaluator, CentralEvaluation) and evaluator.eval_set is not None
        eval_set = evaluator.eval_set
    completed = [h for h in result.history if h.get("status") == "completed"]
    final = completed[-1] if completed else {}
    finished = result.stop_reason in ("max_rounds", "target_reached")
    row: dict[str, Any] = dict(
        status="ok" if finished else (STOPPED_EARLY if completed else "failed"),
        reason=None if finished else result.stop_reason,
        final_accuracy=final.get("eval_accuracy"),
        final_loss=final.get("eval_loss"),
        best_accuracy=result.best_accuracy,
        rounds=result.state.round,
        malicious_per_round=final.get("num_malicious"),
        backdoor_success=None,
    )
    attack = experiment.adversary.attack if experiment.adversary is not None else None
    # Without an attack, the default backdoor's trigger measures how often the honest model
    # already puts triggered inputs in the target class: the baseline of the success rate.
    probe = attack if isinstance(attack, Backdoor) else None
    if probe is None and cell.attack["kind"] == "none":
        probe = Backdoor()
    if probe is not None:
        row["backdoor_success"] = backdoor_success(
            federation.trainer.predict, result.state.params, eval_set.x, eval_set.y, probe
        )
    return row
