"""Generate examples/data/churn_clubs.csv: three fitness clubs' member churn, as clubs keep it.

Deterministic (seeded): running it again writes the same bytes. Per-club non-IID: each
club has its own age mix, membership-plan mix, visit levels and base churn rate. The
numbers are unscaled (age in years, fees in dollars), ``sleep_hours`` is missing for
about 10% of members (more often for those who stopped syncing a tracker), ``plan`` is
text and ``home_zip`` a numeric-looking, high-cardinality code. ``churned`` follows a
logistic ground truth:

    logit = club_offset - 0.15 (visits - 8) - 0.025 (tenure - 24) - 0.02 (age - 40)
            + plan effect + 0.04 (fee - plan's list price) + 0.35 (sleep missing)
            - 0.25 (sleep_hours - 7) + zip-area effect

Usage: python examples/data/make_churn_table.py [output.csv]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

SEED = 2026
PLANS = ("basic", "plus", "premium", "family")
PRICE = {"basic": 29.0, "plus": 49.0, "premium": 89.0, "family": 119.0}
PLAN_EFFECT = {"basic": 0.5, "plus": 0.0, "premium": -0.3, "family": -0.8}
# club: members, age (mean, sd), plan mix, mean visits per month, churn offset
CLUBS = {
    "club-downtown": (1400, (33, 8), (0.45, 0.35, 0.15, 0.05), 10.0, 0.2),
    "club-suburb": (1100, (46, 12), (0.25, 0.25, 0.15, 0.35), 7.0, -0.5),
    "club-campus": (900, (23, 4), (0.70, 0.20, 0.08, 0.02), 12.0, 0.9),
}
COLUMNS = (
    "client_id",
    "age",
    "visits_per_month",
    "tenure_months",
    "monthly_fee",
    "avg_heart_rate",
    "sleep_hours",
    "plan",
    "home_zip",
    "churned",
)


def club_rows(rng: np.random.Generator, club: str, spec: tuple, zips: np.ndarray) -> list[list]:
    """One club's members as CSV rows."""
    n, (age_mu, age_sd), mix, visits_mu, offset = spec
    age = np.clip(rng.normal(age_mu, age_sd, n), 18, 80).round()
    plan = rng.choice(PLANS, size=n, p=mix)
    visits = np.clip(rng.poisson(visits_mu * rng.gamma(4.0, 0.25, n)), 0, 30)
    tenure = np.clip(rng.exponential(30.0, n), 0, 120).round()
    list_price = np.array([PRICE[p] for p in plan])
    fee = (list_price * rng.choice([1.0, 1.0, 0.8, 1.15], size=n)).round(2)
    heart = rng.normal(150 - 0.6 * (age - 40), 12, n).round(1)
    sleep = np.clip(rng.normal(7.0, 1.1, n), 3, 11).round(1)
    local = zips[rng.integers(0, len(zips), n)]
    area = np.where(local % 7 == 0, 0.6, np.where(local % 5 == 0, -0.4, 0.0))
    logit = (
        offset
        - 0.15 * (visits - 8)
        - 0.025 * (tenure - 24)
        - 0.02 * (age - 40)
        + np.array([PLAN_EFFECT[p] for p in plan])
        + 0.04 * (fee - list_price)
        - 0.25 * (sleep - 7.0)
        + area
    )
    miss_p = 0.07 + 0.06 * (visits < 5)
    sleep_missing = rng.random(n) < miss_p
    logit = logit + 0.35 * sleep_missing
    churned = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    plan_missing = rng.random(n) < 0.03
    rows = []
    for i in range(n):
        rows.append(
            [
                club,
                int(age[i]),
                int(visits[i]),
                int(tenure[i]),
                f"{fee[i]:.2f}",
                f"{heart[i]:.1f}",
                "" if sleep_missing[i] else f"{sleep[i]:.1f}",
                "" if plan_missing[i] else plan[i],
                f"{int(local[i]):05d}",
                int(churned[i]),
            ]
        )
    return rows


def make_table(path: str | Path) -> Path:
    """Write the three clubs' table to ``path`` (CSV, header first)."""
    rng = np.random.default_rng(SEED)
    path = Path(path)
    rows: list[list] = []
    for k, (club, spec) in enumerate(CLUBS.items()):
        zips = 10000 * (k + 1) + rng.choice(9999, size=120, replace=False)  # each club's area
        rows += club_rows(rng, club, spec, zips)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("churn_clubs.csv")
    print(make_table(out))
