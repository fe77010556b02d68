"""docs/img/architecture.svg names real components and is its generator's output."""

from __future__ import annotations

import importlib
import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "docs" / "img" / "architecture_svg.py"
SVG = ROOT / "docs" / "img" / "architecture.svg"


def _generator() -> dict:
    return runpy.run_path(str(GENERATOR))


def test_the_committed_svg_is_the_generators_output() -> None:
    assert SVG.read_text() == _generator()["render"](), (
        "docs/img/architecture.svg is stale: run python docs/img/architecture_svg.py"
    )


@pytest.mark.parametrize("component", [b.component for b in _generator()["BOXES"]])
def test_every_box_names_a_component_that_exists(component: str) -> None:
    module, _, attribute = component.partition(":")
    assert hasattr(importlib.import_module(module), attribute), component


def test_the_svg_parses_and_every_box_carries_its_component() -> None:
    tree = ET.parse(SVG)
    named = [g.get("data-component") for g in tree.iter("{http://www.w3.org/2000/svg}g")]
    assert sorted(named) == sorted(b.component for b in _generator()["BOXES"])
