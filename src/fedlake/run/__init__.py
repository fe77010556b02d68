"""The composition root: a config becomes a recipe spec, a federation, its sinks; then runs."""

from fedlake.run.build import (
    Experiment,
    build_experiment,
    build_federation,
    config_section,
    run_dir_of,
)
from fedlake.run.experiment import RunOutcome, prepare_run_dir, run_experiment

__all__ = [
    "Experiment",
    "RunOutcome",
    "build_experiment",
    "build_federation",
    "config_section",
    "prepare_run_dir",
    "run_dir_of",
    "run_experiment",
]
