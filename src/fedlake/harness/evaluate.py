"""``fedlake attack-eval``: run the grid (in parallel, resumable), write its tables,
heat map and MLflow run."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedlake.config import ConfigError, ResumeError, RunConfig, parse_config
from fedlake.harness.grid import (
    Cell,
    cell_config,
    failed_row,
    grid_cells,
    precondition_failed,
    run_cell,
)
from fedlake.harness.heatmap import plot_heatmap
from fedlake.harness.tables import markdown, write_csv
from fedlake.orchestration.events import NullObserver

RESULTS = "results.jsonl"  # one line per finished cell, appended as cells finish
CONFIG = "config.json"  # the config the grid ran with


@dataclass
class GridOutcome:
    """Where the grid's results went."""

    rows: list[dict[str, Any]]
    out_dir: Path
    markdown_path: Path
    csv_path: Path
    heatmap_path: Path
    tracking_uri: str | None
    tracker_run_id: str | None
    archived: Path | None


def grid_dir(cfg: RunConfig) -> Path:
    """The folder of a grid's results: ``output_dir/<name>-attack-eval``."""
    return Path(cfg.output_dir) / f"{cfg.name}-attack-eval"


def base_config(raw: dict[str, Any]) -> dict[str, Any]:
    """What every cell shares: the config without the grid and the sinks (JSON-normalised)."""
    base = {k: v for k, v in raw.items() if k not in ("attack_eval", "lakehouse")}
    return dict(json.loads(json.dumps(base, default=str)))


def prepare(
    cfg: RunConfig, raw: dict[str, Any], *, resume: bool
) -> tuple[Path, Path | None, dict[str, dict]]:
    """Create the results folder; a fresh grid moves an old one aside (never deletes it).

    Returns the folder, where an old one went, and on ``resume`` the finished cells. A
    resumed grid may add or drop cells, but its cells must share the saved base config
    (the same scenario, rounds, seed, ...): finished cells are reused as they are.
    """
    out = grid_dir(cfg)
    done: dict[str, dict] = {}
    archived = None
    if resume:
        saved = out / RESULTS
        if not saved.exists():
            raise ResumeError(f"nothing to resume: {saved} does not exist")
        saved_config = out / CONFIG
        if not saved_config.exists():
            raise ResumeError(f"cannot resume: {saved_config} (the grid's config) is missing")
        before = base_config(json.loads(saved_config.read_text()))
        now = base_config(raw)
        if before != now:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ResumeError(
                f"{', '.join(changed)} differ from the grid being resumed; its finished "
                "cells would not be comparable (only the [attack_eval] lists, workers "
                "and [lakehouse] may change)"
            )
        for line in saved.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that cell runs again
                continue
            done[row["key"]] = row
    elif out.exists() and any(out.iterdir()):
        archived = out.with_name(f"{out.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(out), str(archived))
    out.mkdir(parents=True, exist_ok=True)
    return out, archived, done


def _run_cells(
    raw: dict[str, Any], cells: Sequence[Cell], workers: int
) -> Iterator[dict[str, Any]]:
    """Run ``cells`` (in ``workers`` spawned processes when more than one); yield rows."""
    if workers <= 1 or len(cells) <= 1:
        for cell in cells:
            yield run_cell(raw, cell)
        return
    # spawn: torch and delta-rs misbehave in forked children
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_cell, raw, cell): cell for cell in cells}
        try:
            for future in as_completed(futures):
                try:
                    row = future.result()
                except Exception as exc:  # a worker died: that cell failed, the rest go on
                    row = failed_row(futures[future], f"worker failed: {type(exc).__name__}")
                yield row
        finally:  # stopped early (Ctrl-C, an error): do not start the queued cells
            pool.shutdown(wait=True, cancel_futures=True)


def run_grid(
    raw: dict[str, Any],
    *,
    resume: bool = False,
    workers: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_cell: Callable[[Mapping[str, Any]], None] | None = None,
) -> GridOutcome:
    """Run every cell of the config's ``[attack_eval]`` grid and write the results.

    Args:
        raw: the config as read (a run config plus the ``[attack_eval]`` section).
        resume: keep the cells a killed or finished grid already ran.
        workers: parallel cells (default: the section's, else the number of cores).
        on_start: called with (cells to run, cells already done).
        on_cell: called with every finished cell's row.
    """
    cfg = parse_config(raw)
    cells = grid_cells(cfg)
    check_cells(raw, cells)
    out, archived, done = prepare(cfg, raw, resume=resume)
    (out / CONFIG).write_text(json.dumps(raw, indent=2, default=str))
    todo = [c for c in cells if c.key not in done]
    n_workers = workers or (cfg.attack_eval.workers if cfg.attack_eval else None) or os.cpu_count()
    if on_start is not None:
        on_start(len(todo), len(cells) - len(todo))
    with (out / RESULTS).open("a") as log:
        for row in _run_cells(raw, todo, int(n_workers or 1)):
            done[row["key"]] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            if on_cell is not None:
                on_cell(row)
    rows = [done[c.key] for c in cells]
    title = f"{cfg.name}: attacks x defences"
    md = out / "results.md"
    md.write_text(markdown(rows, title=title))
    csv_path = write_csv(rows, out / "results.csv")
    png = plot_heatmap(rows, out / "heatmap.png", title=cfg.name)
    uri, run_id = _track(cfg, out, rows, [md, csv_path, png])
    return GridOutcome(rows, out, md, csv_path, png, uri, run_id, archived)


def check_cells(raw: dict[str, Any], cells: Sequence[Cell]) -> None:
    """Fail before anything runs on an attack or defence option the library refuses.

    Builds (without running) one cell per distinct attack and per distinct defence; a
    defence whose precondition fails at some fraction is not an error (that cell is n/a).
    """
    from fedlake.run import build_federation

    firsts = {c.attack_label: c for c in reversed(cells)} | {
        c.defence_label: c for c in reversed(cells)
    }
    for cell in firsts.values():
        try:
            build_federation(cell_config(raw, cell), observer=NullObserver())
        except ConfigError as exc:
            if not precondition_failed(exc):
                where = f"{cell.attack_label} at {cell.fraction:g} with {cell.defence_label}"
                raise ConfigError(f"attack_eval cell {where}: {exc}") from None


def _track(
    cfg: RunConfig, out: Path, rows: Sequence[Mapping[str, Any]], artifacts: Sequence[Path]
) -> tuple[str | None, str | None]:
    """One MLflow run for the grid: its settings, every cell's accuracy, the tables."""
    if not cfg.lakehouse.mlflow:
        return None, None
    from fedlake.lakehouse.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(
        out,
        tracking_uri=cfg.lakehouse.tracking_uri,
        registry_uri=cfg.lakehouse.registry_uri,
        experiment=cfg.lakehouse.experiment,
    )
    grid = cfg.attack_eval
    assert grid is not None
    params = {
        "name": cfg.name,
        "seed": cfg.seed,
        "attacks": sorted({r["attack"] for r in rows}),
        "defences": sorted({r["defence"] for r in rows}),
        "fractions": list(grid.fractions),
        "rounds": cfg.federation.rounds,
        "scenario": cfg.data.scenario,
    }
    run_id = tracker.start(f"{cfg.name}-attack-eval", params)
    metrics: dict[str, float] = {}
    for r in rows:
        stem = f"{r['attack']}.{r['fraction']:g}.{r['defence']}"
        for key in ("final_accuracy", "backdoor_success"):
            if r.get(key) is not None:
                metrics[f"{key}.{stem}"] = float(r[key])
    tracker.log_metrics(metrics, step=0)
    for path in artifacts:
        tracker.log_artifact(path)
    tracker.end("FINISHED")
    return tracker.tracking_uri, run_id
