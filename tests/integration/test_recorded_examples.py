"""README's and docs' example numbers are recorded runs, and the code still produces them.

bench/examples.py runs every example the README quotes and writes
bench/results/examples.json; both tables are rendered from it. These tests fail when a
table was edited by hand or left stale, and when an example's outcome (stop reason, stop
round, accuracy, byte ratios, and the final and best models' SHA-256) is no longer what
was recorded. On the machine kind that recorded them the outcome must be the same to the
printed digit and the models to the bit (runs are bit-for-bit reproducible there); on
another kind (other convolution or BLAS kernels sum floats in
another order) within a tolerance that still catches a real regression.
"""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("examples_bench", ROOT / "bench/examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
RECORDED = json.loads(BENCH.RESULTS.read_text())
EXACT = ("stop_reason", "rounds", "final_accuracy", "best_accuracy", "best_round",
         "upload_factor", "download_factor", "pooled_accuracy",
         "model_sha256", "best_model_sha256")  # fmt: skip


@pytest.mark.parametrize(("path", "table"), [(BENCH.README, "readme"), (BENCH.DOC, "results")])
def test_tables_are_rendered_from_the_recorded_runs(path, table):
    assert BENCH.section(path.read_text(), table) == BENCH.render(RECORDED, table=table), (
        f"{path.name}'s examples table differs from bench/results/examples.json: "
        "run python bench/examples.py --write"
    )


def test_the_make_run_row_is_what_make_run_runs():
    """README's `make run` row is recorded from the config and seed that `make run` runs."""
    recipe = re.search(r"^run:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    config = re.search(r"--config (\S+)", recipe.group(1)).group(1)
    (row,) = [e for e in BENCH.EXAMPLES if e.label.startswith("`make run`")]
    assert (f"examples/{row.config}", row.seed) == (config, None)
    assert f"| {row.label} |" in BENCH.section(BENCH.README.read_text(), "readme")


def test_every_example_is_recorded():
    assert sorted(RECORDED["runs"]) == sorted(e.key for e in BENCH.EXAMPLES)


# Tolerances across machine kinds, per example where the defaults (accuracy +-0.02,
# rounds +-max(5, rounds / 5)) are too tight, both measured on the two kinds we run on:
# - SCAFFOLD + Ditto with deadline stragglers ends at ~50%, and the kernels' float order
#   alone moves it by ~3 points (0.5121 recorded on AVX2, 0.4796 on AVX-512);
# - activity seed 2 hovers just under its 90% target for many rounds, so the round that
#   crosses it moves with the float order (round 32 recorded on AVX2, 47 on AVX-512).
ACROSS_KINDS = {"activity_personalized": {"accuracy": 0.05}, "activity_seed2": {"rounds": 16}}


def _close(got, want, key=""):
    """Another machine kind: same stop reason, stop round and accuracy near the recorded."""
    wider = ACROSS_KINDS.get(key, {})
    assert got["stop_reason"] == want["stop_reason"]
    rounds = wider.get("rounds", max(5, want["rounds"] // 5))
    assert abs(got["rounds"] - want["rounds"]) <= rounds
    tolerance = wider.get("accuracy", 0.02)
    assert got["final_accuracy"] == pytest.approx(want["final_accuracy"], abs=tolerance)
    for key in ("upload_factor", "download_factor"):
        assert got[key] == pytest.approx(want[key], rel=0.02)
    if want.get("pooled_accuracy") is not None:
        assert got["pooled_accuracy"] == pytest.approx(want["pooled_accuracy"], abs=0.02)


@pytest.mark.parametrize("example", BENCH.EXAMPLES, ids=lambda e: e.key)
def test_example_still_produces_its_recorded_numbers(example, tmp_path):
    want = RECORDED["runs"][example.key]
    # without MLflow and Delta (faster): the sinks must not change what is trained
    got = BENCH.run_example(example, output_dir=tmp_path, lakehouse=False)
    if BENCH.machine_kind() == RECORDED["machine_kind"]:
        assert {k: got.get(k) for k in EXACT} == {k: want.get(k) for k in EXACT}
    else:
        _close(got, want, example.key)
