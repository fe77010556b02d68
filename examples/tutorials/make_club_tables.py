"""Write one Delta table per club, of model-ready features, from the clubs' churn rows.

    python examples/tutorials/make_club_tables.py --out work/churn/clubs

For docs/tutorials/cross-silo-churn.md. The input (examples/data/churn_clubs.csv) holds
three clubs' members as clubs keep them: ages in years, fees in dollars, a text ``plan``,
gaps in ``sleep_hours``. A deployed federation (``fedlake server`` and ``fedlake client``)
takes numeric, model-ready tables only (the federated preprocessing of ``fedlake run`` is
not served yet), so every club turns its own rows into features with the same fixed
recipe below, agreed in advance: centres and scales are published constants, not
statistics of any club's data, so no club learns anything about another's members and
nothing is pooled. Each club's table lands in OUT/<club>/ (a Delta table with
``client_id``, the features and ``churned``); in a real deployment each club would run
this on its own export, with ``--club``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

ROWS = Path(__file__).resolve().parents[1] / "data" / "churn_clubs.csv"
# column: (centre, scale), fixed in advance (rough population values, not fitted)
SCALE = {
    "age": (40.0, 12.0),
    "visits_per_month": (8.0, 5.0),
    "tenure_months": (24.0, 24.0),
    "monthly_fee": (60.0, 35.0),
    "avg_heart_rate": (150.0, 15.0),
    "sleep_hours": (7.0, 1.0),
}
PLANS = ("basic", "plus", "premium", "family")  # an unknown or missing plan: all zeros
FEATURES = (*SCALE, "sleep_missing", *(f"plan_{p}" for p in PLANS))


def features(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """One club's rows as float32 feature columns (gaps imputed, with an indicator)."""
    out: dict[str, np.ndarray] = {}
    for col, (centre, scale) in SCALE.items():
        raw = np.array([float(r[col]) if r[col] else np.nan for r in rows])
        out[col] = ((np.nan_to_num(raw, nan=centre) - centre) / scale).astype(np.float32)
        if col == "sleep_hours":
            out["sleep_missing"] = np.isnan(raw).astype(np.float32)
    for plan in PLANS:
        out[f"plan_{plan}"] = np.array([r["plan"] == plan for r in rows], dtype=np.float32)
    return out


def write_club(club: str, rows: list[dict[str, str]], target: Path) -> int:
    """Write one club's feature table to ``target`` (overwritten); return its row count."""
    cols = features(rows)
    table = pa.table(
        {
            "client_id": pa.array([club] * len(rows), pa.string()),
            **{name: pa.array(cols[name]) for name in FEATURES},
            "churned": pa.array([int(r["churned"]) for r in rows], pa.int64()),
        }
    )
    target.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(target), table, mode="overwrite")
    return len(rows)


def main() -> int:
    """Write each club's table; print one line per club."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder of the clubs' tables")
    ap.add_argument("--rows", type=Path, default=ROWS, help="the members' rows (CSV)")
    ap.add_argument("--club", action="append", help="only this club (repeatable)")
    args = ap.parse_args()
    with open(args.rows, newline="") as f:
        rows = list(csv.DictReader(f))
    clubs = sorted({r["client_id"] for r in rows})
    unknown = sorted(set(args.club or ()) - set(clubs))
    if unknown:
        ap.error(f"--club {', '.join(unknown)}: not in {args.rows}; clubs: {', '.join(clubs)}")
    for club in args.club or clubs:
        n = write_club(club, [r for r in rows if r["client_id"] == club], args.out / club)
        print(f"{club}: {n} members, {len(FEATURES)} features -> {args.out / club}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
