"""Small federations over every feature give, bit for bit, what they gave when recorded.

tests/golden/runs.py defines the runs (one per feature: recipes, personalisation,
compression, privacy, attacks, stragglers, retries, executors) and reduces each to
digests of what a user sees: the final and best models, every round's model row, the
history and the client_updates rows (wall times and timestamps left out).
``python tests/golden/record.py`` records them. On the machine kind that recorded them
the digests must be equal (runs are bit-reproducible there); on another kind, whose
kernels sum floats in another order, the run must end the same way within a tolerance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.golden.runs import RUNS, outcome

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECORDED = json.loads((ROOT / "tests" / "golden" / "golden_runs.json").read_text())
DIGESTS = ("model", "best_model", "round_models", "history", "client_rows")


def _machine_kind() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from examples import machine_kind
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return machine_kind()


SAME_KIND = _machine_kind() == RECORDED["machine_kind"]


def test_every_run_is_recorded() -> None:
    assert sorted(RECORDED["runs"]) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_run_gives_its_recorded_outcome(name: str, tmp_path: Path) -> None:
    want = RECORDED["runs"][name]
    got = outcome(name, tmp_path)
    assert (got["stop_reason"], got["rounds"]) == (want["stop_reason"], want["rounds"])
    if SAME_KIND:
        assert {k: got[k] for k in DIGESTS} == {k: want[k] for k in DIGESTS}
        assert got["final_accuracy"] == want["final_accuracy"]
    elif want["final_accuracy"] is not None:
        assert got["final_accuracy"] == pytest.approx(want["final_accuracy"], abs=0.05)
