"""Record every golden run's digests: ``python tests/golden/record.py [--only a,b]``.

Writes tests/golden/golden_runs.json with the machine kind that produced it (floating
point results depend on it; see bench/examples.py's machine_kind).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench._git import git_state  # noqa: E402
from tests.golden.runs import RUNS, outcome  # noqa: E402

RESULTS = Path(__file__).with_name("golden_runs.json")


def main() -> int:
    """Run the golden runs and write their digests."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated run names; merged into the JSON")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        print(f"unknown runs: {unknown}; known: {list(RUNS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "bench"))
    from examples import machine_kind

    recorded = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    runs = recorded.get("runs", {})
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            runs[name] = outcome(name, Path(tmp))
            print(name, runs[name], flush=True)
    head, changed = git_state(ROOT, "src")
    out = {
        "date": date.today().isoformat(),
        "git_head": head,
        "uncommitted": changed,
        "machine_kind": machine_kind(),
        "runs": {n: runs[n] for n in RUNS if n in runs},
    }
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
