"""Run report: the PNG of rounds and the summary rows, on a toy history."""

import pytest

from fedlake.lakehouse.report import best_row, final_rounds, plot_rounds, summary_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def toy_history():
    """Three rounds; round 2 needed a retry; round 3 was not evaluated."""

    def row(r, attempt=0, status="completed", **kw):
        base = {
            "round": r,
            "attempt": attempt,
            "status": status,
            "num_sampled": 4,
            "num_completed": 3,
            "num_dropped": 1,
            "num_rejected": 0,
            "train_loss": 1.0 / r,
            "eval_loss": 0.9 / r,
            "eval_accuracy": 0.5 + 0.1 * r,
            "bytes_up": 3_000,
            "bytes_down": 4_000,
            "duration_s": 2.0,
            "cohort": "[]",
            "extra_key": {"ignored": True},
        }
        return {**base, **kw}

    return [
        row(1),
        row(2, status="retry", num_completed=0, num_dropped=4, eval_accuracy=None, bytes_up=0),
        row(2, attempt=1, num_rejected=1, num_completed=2, eval_accuracy=0.8),
        row(3, eval_accuracy=None, eval_loss=None, duration_s=4.0, num_failed=1),
    ]


def test_final_rounds_keeps_the_completed_attempt():
    rows = final_rounds(toy_history())
    assert [(r["round"], r["attempt"]) for r in rows] == [(1, 0), (2, 1), (3, 0)]
    assert final_rounds(list(reversed(toy_history()))) == rows


def test_summary_numbers_on_a_toy_history():
    assert dict(summary_rows(toy_history())) == {
        "rounds run": "3",
        "best accuracy": "0.8000 (round 2)",
        "final accuracy": "0.8000 (round 2)",
        "final eval loss": "0.4500 (round 2)",
        "final train loss": "0.3333",
        # traffic, time and client counts include the retried attempt of round 2
        "bytes up (total)": "9.00 kB",
        "bytes down (total)": "16.00 kB",
        "duration (total)": "10.00 s",
        "duration (mean per round)": "3.33 s",
        "clients dropped (total)": "7",
        "clients failed (total)": "1",
        "updates rejected (total)": "1",
        "uplink vs float32": "n/a",  # a history from before compression was recorded
        "downlink vs float32": "n/a",
    }
    assert summary_rows([]) == [("rounds run", "0")]


def test_summary_ratio_weights_each_round_by_its_bytes():
    rows = final_rounds(toy_history())
    # rounds of 3,000 bytes up at 10x and 20x, one at 30x: 3 * 3,000 bytes stand for
    # 180,000 float32 bytes, 20x overall; the download is always 4x
    for row, up in zip(rows, (10.0, 20.0, 30.0), strict=True):
        row.update(upload_ratio=up, download_ratio=4.0)
    summary = dict(summary_rows(rows))
    assert summary["uplink vs float32"] == "20.0x smaller"
    assert summary["downlink vs float32"] == "4.0x smaller"
    rows[0]["upload_ratio"] = rows[1]["upload_ratio"] = rows[2]["upload_ratio"] = 0.5
    assert dict(summary_rows(rows))["uplink vs float32"] == "2.00x larger"
    for row in rows:
        row["upload_ratio"] = 0.997
    assert dict(summary_rows(rows))["uplink vs float32"] == (
        "0.997x (uncompressed, headers included)"
    )


def test_summary_without_any_evaluation():
    rows = [{**r, "eval_accuracy": None, "eval_loss": None} for r in toy_history()]
    summary = dict(summary_rows(rows))
    assert summary["best accuracy"] == summary["final accuracy"] == "n/a"


def test_plot_writes_a_png(tmp_path):
    path = plot_rounds(toy_history(), tmp_path / "out" / "report.png", title="toy run")
    assert path == tmp_path / "out" / "report.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1500, 850)


def test_plot_handles_a_single_unevaluated_round(tmp_path):
    row = {"round": 1, "num_sampled": 2, "bytes_up": 10, "bytes_down": 10, "duration_s": 0.1}
    assert plot_rounds([row], tmp_path / "one.png", title="t").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no rounds to plot"):
        plot_rounds([], tmp_path / "none.png", title="t")


def test_best_round_breaks_accuracy_ties_by_lower_loss():
    rows = [
        {"round": 1, "eval_accuracy": 0.9, "eval_loss": 0.5},
        {"round": 2, "eval_accuracy": 0.9, "eval_loss": 0.3},
        {"round": 3, "eval_accuracy": 0.8, "eval_loss": 0.1},
        {"round": 4, "eval_accuracy": None, "eval_loss": None},
    ]
    assert best_row(rows)["round"] == 2
    assert dict(summary_rows(rows))["best accuracy"] == "0.9000 (round 2)"
    assert best_row([{"round": 1, "eval_accuracy": None}]) is None


def _traffic(bytes_up, upload_ratio, senders=3):
    return {
        "round": 1,
        "attempt": 0,
        "status": "completed",
        "num_completed": senders,
        "num_rejected": 0,
        "eval_accuracy": 0.5,
        "bytes_up": bytes_up,
        "bytes_down": bytes_up,
        "upload_ratio": upload_ratio,
        "download_ratio": upload_ratio,
    }


def test_summary_says_when_headers_dominate_a_tiny_models_traffic():
    # an 8-parameter logistic model: 32 float32 bytes + the 36-byte header per upload
    rows = dict(summary_rows([_traffic(3 * 68, (3 * 32) / (3 * 68))]))
    assert rows["uplink vs float32"] == "2.12x larger"  # the honest count stays
    assert rows["  headers"] == (
        "36 bytes of each 68-byte upload (53%): a ~8-parameter model pays mostly for framing"
    )


def test_summary_has_no_header_note_for_models_of_realistic_size():
    # 10,000 parameters: the header is 0.09% of the message
    rows = dict(summary_rows([_traffic(3 * 40_036, (3 * 40_000) / (3 * 40_036))]))
    assert "  headers" not in rows
    assert rows["uplink vs float32"] == "0.999x (uncompressed, headers included)"
