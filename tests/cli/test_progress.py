"""The run's console: live bars on a terminal (80 columns), one line per round elsewhere."""

import io
import re

from rich.console import Console

from fedlake.cli.progress import QuietObserver, RichObserver

RECORD = {
    "round": 12,
    "eval_accuracy": 0.8712,
    "eval_loss": 0.4011,
    "num_completed": 13,
    "num_sampled": 15,
    "duration_s": 0.734,
}


def drive(console):
    with RichObserver(console) as obs:
        obs.run_started(total_rounds=100, start_round=11, resumed=False)
        obs.round_started(round=12, attempt=1, cohort_size=15)
        for done in range(1, 16):
            obs.client_finished(round=12, done=done, total=15)
        obs.round_finished(RECORD)
        obs.message("round 12 attempt 1: only 0 valid updates")
    return obs


def test_plain_output_prints_one_line_per_round():
    out = io.StringIO()
    obs = drive(Console(file=out, width=200))
    assert not obs.live
    lines = out.getvalue().splitlines()
    assert lines[0] == "starting round 12 of at most 100"
    assert "round 12/100  acc 0.871  loss 0.401  13/15 ok  0.73 s" in lines
    assert lines[-1] == "round 12 attempt 1: only 0 valid updates"


def test_terminal_bars_fit_80_columns():
    out = io.StringIO()
    obs = drive(Console(file=out, width=80, force_terminal=True, color_system=None))
    assert obs.live
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    bars = [line for line in re.split(r"[\r\n]", text) if "━" in line]
    assert bars and all(len(line.rstrip()) <= 80 for line in bars)
    final = [line for line in bars if line.startswith("rounds")][-1]
    assert "12/100" in final and "acc 0.871  loss 0.401  13/15 ok" in final


def test_quiet_prints_only_messages():
    out = io.StringIO()
    obs = QuietObserver(Console(file=out, width=200))
    obs.run_started(total_rounds=3, start_round=0, resumed=False)
    obs.round_finished(RECORD)
    obs.message("round 1: 2 failed")
    assert out.getvalue() == "round 1: 2 failed\n" and obs.records == [RECORD]
