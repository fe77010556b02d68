"""A club scores the federation's registered model on its own held-out members.

    python examples/tutorials/evaluate_club.py --run runs/churn-served \
        --table work/churn/clubs/club-downtown

For docs/tutorials/cross-silo-churn.md. ``fedlake server`` does not evaluate (it holds no
data), so each club checks the model where its rows are: the held-out fifth of its table
that ``fedlake client`` never trained on (the same split: a hash of each row, 20%).
Nothing leaves the club; the model comes from the run's MLflow registry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> int:
    """Print the club's accuracy against always predicting its majority class."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the server's run folder")
    ap.add_argument("--table", type=Path, required=True, help="this club's Delta table")
    ap.add_argument("--club", help="the club's id (default: the table folder's name)")
    args = ap.parse_args()
    import mlflow

    from fedlake.data.sources import TableClientData

    cfg = json.loads((args.run / "config.json").read_text())
    data, lake = cfg["data"], cfg["lakehouse"]
    club = args.club or args.table.name
    table = TableClientData(
        args.table,
        format="delta",
        label_column=data["label_column"],
        feature_columns=data["feature_columns"],
        test_fraction=data["test_fraction"],
    )
    rows = table.load(club)
    mlflow.set_tracking_uri(f"sqlite:///{(args.run / 'mlflow.db').resolve()}")
    uri = f"models:/{lake['model_name']}@{lake['alias']}"
    model = mlflow.pyfunc.load_model(uri)
    predicted = np.asarray(model.predict(rows.x_test.astype(np.float64)))
    accuracy = float(np.mean(predicted == rows.y_test))
    majority = max(float(np.mean(rows.y_test)), 1.0 - float(np.mean(rows.y_test)))
    print(
        f"{club}: accuracy {100 * accuracy:.1f}% on its {rows.num_test} held-out members "
        f"(always guessing its majority class: {100 * majority:.1f}%), model {uri}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
