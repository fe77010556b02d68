"""Compare a served run's final model with the simulated run of the same seed and data.

    python examples/network/check.py --served work/network/runs/digits-served

Runs digits_simulated.toml on this machine, loads the served run's checkpoint, and exits 0
only if the two final models are the same bit for bit; prints the served model's accuracy
on every client's test split last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from fedlake.config import load_config
from fedlake.orchestration.checkpoint import load_checkpoint
from fedlake.run import run_experiment
from fedlake.run.scenarios import build_data, build_trainer, model_config
from fedlake.simulation.evaluation import EvalSet

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Exit 0 when the served model equals the simulated one."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--served", type=Path, required=True, help="the served run's folder")
    args = ap.parse_args()
    served = load_checkpoint(args.served)
    if served is None or not served.finished:
        print(f"no finished run in {args.served}", file=sys.stderr)
        return 1
    cfg = load_config(HERE / "digits_simulated.toml")
    rounds = served.state.round
    with tempfile.TemporaryDirectory() as out:
        cfg = cfg.model_copy(
            update={
                "output_dir": out,
                "federation": cfg.federation.model_copy(update={"rounds": rounds}),
            }
        )
        simulated = run_experiment(cfg).result.state.params
    scenario = build_data(cfg)
    trainer = build_trainer(model_config(cfg.model, scenario))
    test = EvalSet.build(scenario.data, scenario.data.client_ids())
    accuracy = trainer.evaluate(np.asarray(served.state.params), test.x, test.y)["accuracy"]
    same = np.asarray(served.state.params).tobytes() == np.asarray(simulated).tobytes()
    print(f"served run: {rounds} rounds, run {served.run_id}")
    print("final model: " + ("the same as the simulated run's, bit for bit" if same else
                             "DIFFERENT from the simulated run's"))  # fmt: skip
    print(f"final accuracy: {100 * accuracy:.2f}% on every client's test split")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
