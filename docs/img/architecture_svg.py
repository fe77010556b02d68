"""Generate docs/img/architecture.svg, the reference architecture, from fedlake's components.

Every box names the class or function that implements it (``data-component``), and
tests/docs/test_architecture_svg.py imports each one and checks that the committed SVG
is this script's output: rename or remove a component and the test says which box to
change. Regenerate with ``python docs/img/architecture_svg.py``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import NamedTuple

OUT = Path(__file__).with_name("architecture.svg")


class Box(NamedTuple):
    """One component: where it is drawn, what it says, and what implements it."""

    x: int
    y: int
    label: str
    note: str
    component: str  # "module:attribute" that must exist


class Group(NamedTuple):
    """A place where components run (a club, the hub, the lakehouse)."""

    x: int
    y: int
    w: int
    h: int
    title: str


W, H = 250, 54  # a box

GROUPS = (
    Group(20, 40, 290, 430, "Each club or device (its data never leaves)"),
    Group(350, 40, 290, 430, "fedlake server (the hub)"),
    Group(680, 40, 290, 430, "Databricks lakehouse"),
)

BOXES = (
    Box(40, 80, "Local data", "a Delta / Parquet / CSV table", "fedlake.data.sources:TableClientData"),
    Box(40, 150, "fedlake client", "HTTPS, signed requests, retries", "fedlake.backends.remote.client:RemoteClient"),
    Box(40, 220, "Client runtime", "train, clip, DP noise, compress", "fedlake.client.runtime:ClientRuntime"),
    Box(40, 290, "Secure aggregation (client)", "mask the update (SecAgg+)", "fedlake.client.secure:seal_reply"),
    Box(40, 360, "Client state store", "control variates, residuals, secrets", "fedlake.client.stores:ClientStateStore"),
    Box(370, 80, "HTTP API", "FastAPI: tasks, replies, audit", "fedlake.backends.remote.app:create_app"),
    Box(370, 150, "Remote executor", "a round's cohort over the network", "fedlake.backends.remote.executor:RemoteExecutor"),
    Box(370, 220, "Federation", "sample, rounds, retries, resume", "fedlake.orchestration.federation:Federation"),
    Box(370, 290, "Aggregation", "FedAvg and robust rules", "fedlake.aggregators:AGGREGATORS"),
    Box(370, 360, "Privacy ledger", "epsilon from dp_accounting", "fedlake.privacy.accounting:ledger_epsilon"),
    Box(700, 80, "Spark", "rounds at scale (fedlake run)", "fedlake.backends.spark:SparkExecutor"),
    Box(700, 150, "MLflow", "params, metrics, the model (UC)", "fedlake.lakehouse.mlflow_tracker:MlflowTracker"),
    Box(700, 220, "Delta Lake", "models, rounds, client_updates, audit", "fedlake.lakehouse.delta_store:DeltaStore"),
    Box(700, 290, "Unity Catalog", "schema, tables, grants", "fedlake.lakehouse.unity_catalog:plan_governance"),
)

ARROWS = (  # (from box label, to box label, text)
    ("fedlake client", "HTTP API", "model down / update up"),
    ("Federation", "MLflow", "tracks, registers"),
    ("Federation", "Delta Lake", "writes"),
)


def _box(b: Box) -> str:
    comp = escape(b.component)
    return (
        f'<g data-component="{comp}"><rect x="{b.x}" y="{b.y}" width="{W}" height="{H}" '
        f'rx="6" fill="#ffffff" stroke="#33658a"/>'
        f'<text x="{b.x + 10}" y="{b.y + 22}" font-weight="bold">{escape(b.label)}</text>'
        f'<text x="{b.x + 10}" y="{b.y + 42}" font-size="11" fill="#555">{escape(b.note)}</text></g>'
    )


def _arrow(a: Box, b: Box, text: str) -> str:
    x1, y1 = a.x + W, a.y + H // 2
    x2, y2 = b.x, b.y + H // 2
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2 - 6
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#86bbd8" stroke-width="2" '
        f'marker-end="url(#head)" marker-start="url(#head)"/>'
        f'<text x="{mx}" y="{my}" font-size="11" text-anchor="middle">{escape(text)}</text>'
    )


def render() -> str:
    """The SVG document."""
    by_label = {b.label: b for b in BOXES}
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="990" height="490" '
        'font-family="Helvetica, Arial, sans-serif" font-size="13">',
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#86bbd8"/></marker></defs>',
        '<text x="20" y="24" font-size="15" font-weight="bold">fedlake reference '
        "architecture: the model travels, the data stays</text>",
    ]
    for g in GROUPS:
        parts.append(
            f'<rect x="{g.x}" y="{g.y}" width="{g.w}" height="{g.h}" rx="10" fill="#eef4f8" '
            f'stroke="#33658a" stroke-dasharray="4 3"/>'
            f'<text x="{g.x + 10}" y="{g.y + 22}" font-weight="bold" fill="#33658a">'
            f"{escape(g.title)}</text>"
        )
    parts += [_box(b) for b in BOXES]
    parts += [_arrow(by_label[a], by_label[b], t) for a, b, t in ARROWS]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
