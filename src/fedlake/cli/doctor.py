"""`fedlake doctor`: a config checked against best practices, findings with their fix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedlake.cli.common import fail
from fedlake.doctor import SEVERITIES, Finding, diagnose_file, has_errors

FORMATS = ("text", "markdown", "json")
_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def summary(findings: list[Finding]) -> str:
    """One line: how many findings of each severity."""
    counts = Counter(f.severity for f in findings)
    if not findings:
        return "no findings: the config follows the checked practices"
    parts = [f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in SEVERITIES if counts[s]]
    return ", ".join(parts)


def as_markdown(findings: list[Finding]) -> str:
    """The findings as a Markdown table and the summary line."""
    rows = ["| severity | check | finding | fix |", "|---|---|---|---|"]
    rows += [
        f"| {f.severity} | `{f.check}` | {f.message.replace('|', '/')} | "
        f"{f.fix.replace('|', '/')} |"
        for f in findings
    ]
    return "\n".join([*rows, "", summary(findings)]) if findings else summary(findings)


def as_json(findings: list[Finding]) -> str:
    """The findings as a JSON list of objects."""
    return json.dumps([f.__dict__ for f in findings], indent=2)


def as_table(findings: list[Finding]) -> Table:
    """The findings as a rich table."""
    table = Table(title="fedlake doctor", title_justify="left")
    table.add_column("severity")
    table.add_column("check", style="bold")
    table.add_column("finding", overflow="fold")
    table.add_column("fix", overflow="fold")
    for f in findings:
        style = _STYLE[f.severity]
        table.add_row(f"[{style}]{f.severity}[/]", f.check, escape(f.message), escape(f.fix))
    return table


def doctor(
    config: Annotated[Path, typer.Argument(help="Run config (TOML or YAML).")],
    format_: Annotated[
        str, typer.Option("--format", help="text (a table), markdown or json.")
    ] = "text",
) -> None:
    """Check a config against best practices: findings with severity and the fix.

    Exits 1 when any finding is an error (the run would fail, or its guarantee would
    not hold), else 0.
    """
    if format_ not in FORMATS:
        fail(f"--format must be text, markdown or json, got {format_!r}", 2)
    findings = diagnose_file(config)
    console = Console(soft_wrap=format_ != "text", highlight=False)
    if format_ == "json":
        console.print_json(as_json(findings))
    elif format_ == "markdown":
        console.print(as_markdown(findings), markup=False)
    else:
        if findings:
            console.print(as_table(findings))
        console.print(summary(findings), markup=False)
    if has_errors(findings):
        raise typer.Exit(1)
