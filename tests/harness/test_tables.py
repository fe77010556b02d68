"""The grid's cells, tables and heat map, from hand-made rows."""

import csv

import pytest

from fedlake.config import ConfigError, parse_config
from fedlake.harness.grid import Cell, cell_config, grid_cells, label
from fedlake.harness.heatmap import plot_heatmap
from fedlake.harness.tables import markdown, write_csv

ROWS = [
    {
        "attack": "none",
        "fraction": 0.2,
        "defence": "mean",
        "status": "ok",
        "final_accuracy": 0.95,
        "backdoor_success": 0.04,
    },
    {
        "attack": "none",
        "fraction": 0.2,
        "defence": "bulyan",
        "status": "n/a",
        "reason": "bulyan needs at least 19 updates",
    },
    {
        "attack": "backdoor",
        "fraction": 0.2,
        "defence": "mean",
        "status": "ok",
        "final_accuracy": 0.9,
        "backdoor_success": 0.98,
    },
    {
        "attack": "backdoor",
        "fraction": 0.2,
        "defence": "bulyan",
        "status": "failed",
        "final_accuracy": None,
        "reason": "insufficient_updates",
    },
]


def test_grid_cells_cover_every_attack_fraction_and_defence_in_order():
    cfg = parse_config(
        {
            "attack_eval": {
                "attacks": ["none", {"kind": "alie", "z": 1.5}],
                "defences": ["mean", {"kind": "krum", "f": 1}],
                "fractions": [0.2, 0.1],
            }
        }
    )
    cells = grid_cells(cfg)
    assert [f"{c.attack_label}|{c.fraction:g}|{c.defence_label}" for c in cells] == [
        "none|0.1|mean",
        "none|0.1|krum(f=1)",
        "none|0.2|mean",
        "none|0.2|krum(f=1)",
        "alie(z=1.5)|0.1|mean",
        "alie(z=1.5)|0.1|krum(f=1)",
        "alie(z=1.5)|0.2|mean",
        "alie(z=1.5)|0.2|krum(f=1)",
    ]
    assert len({c.key for c in cells}) == len(cells)


def test_cells_that_round_to_one_label_keep_distinct_keys():
    a = Cell({"kind": "sign_flip", "scale": 4.0000001}, 0.1234567, {"kind": "mean"})
    b = Cell({"kind": "sign_flip", "scale": 4.0}, 0.1234568, {"kind": "mean"})
    assert a.attack_label == b.attack_label == "sign_flip(scale=4)"
    assert a.key != b.key


def test_empty_grid_lists_are_refused():
    for key in ("attacks", "defences"):
        with pytest.raises(ConfigError, match=f"attack_eval.{key}: .*at least 1 item"):
            parse_config({"attack_eval": {key: []}})


def test_default_grid_is_every_attack_and_defence():
    cfg = parse_config({"attack_eval": {}})
    cells = grid_cells(cfg)
    assert len(cells) == 7 * 9 * 2
    assert {c.attack["kind"] for c in cells} == {
        "none",
        "sign_flip",
        "gaussian",
        "label_flip",
        "backdoor",
        "alie",
        "ipm",
    }


def test_a_config_without_a_grid_is_refused():
    with pytest.raises(ConfigError, match=r"no \[attack_eval\] section"):
        grid_cells(parse_config({}))


def test_cell_config_replaces_attack_and_defence_and_turns_sinks_off():
    base = {
        "algorithm": {"client_lr": 0.3},
        "attack": {"kind": "ipm", "fraction": 0.4},
        "attack_eval": {},
        "federation": {"rounds": 3},
    }
    cell = Cell({"kind": "sign_flip", "scale": 2.0}, 0.2, {"kind": "median"})
    cfg = cell_config(base, cell)
    assert cfg.attack.kind == "sign_flip" and cfg.attack.fraction == 0.2
    assert cfg.attack.scale == 2.0
    assert cfg.algorithm.aggregator.kind == "median" and cfg.algorithm.client_lr == 0.3
    assert not cfg.lakehouse.delta and not cfg.lakehouse.mlflow and cfg.attack_eval is None
    assert label({"kind": "trimmed_mean", "trim_ratio": 0.25}) == "trimmed_mean(trim_ratio=0.25)"


def test_markdown_tables_show_percent_na_and_failed():
    text = markdown(ROWS, title="t")
    assert "| attack \\ defence | mean | bulyan |" in text
    assert "| none | 95.0 | n/a |" in text
    assert "| backdoor | 90.0 | failed |" in text
    assert "## Backdoor success rate (%), 20% malicious" in text
    assert "| backdoor | 98.0 | failed |" in text
    assert "| none | 4.0 | n/a |" in text  # the baseline row of the backdoor table
    assert "- bulyan: bulyan needs at least 19 updates" in text


def test_csv_has_one_line_per_cell(tmp_path):
    path = write_csv(ROWS, tmp_path / "r.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["attack"], r["defence"], r["status"]) for r in rows] == [
        ("none", "mean", "ok"),
        ("none", "bulyan", "n/a"),
        ("backdoor", "mean", "ok"),
        ("backdoor", "bulyan", "failed"),
    ]
    assert rows[2]["backdoor_success"] == "0.98"


def test_heatmap_is_a_png(tmp_path):
    path = plot_heatmap(ROWS, tmp_path / "h.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
