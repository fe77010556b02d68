"""Helpers shared by CLI commands: one-line errors and the summary table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedlake.config import ConfigError, ResumeError

err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one red line on stderr and exit with ``code``."""
    # escaped: a message may quote a config section such as [attack_eval]
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def friendly_errors(debug: bool = False) -> Iterator[None]:
    """Turn expected failures into one line and an exit code instead of a traceback."""
    try:
        yield
    except ResumeError as exc:
        fail(f"resume: {exc}", code=2)
    except ConfigError as exc:
        fail(f"config: {exc}", code=2)
    except KeyboardInterrupt:
        fail("interrupted; completed rounds are checkpointed, continue with --resume", code=130)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if debug:
            raise
        fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


def summary_table(rows: Sequence[tuple[str, str]], *, title: str) -> Table:
    """A two-column rich table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")  # paths and URIs wrap, never "…"
    for k, v in rows:
        table.add_row(k, v)
    return table


def print_table(rows: Sequence[tuple[str, str]], *, title: str) -> None:
    """Print a summary table to stdout."""
    Console().print(summary_table(rows, title=title))


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set ``section.key`` (or top-level ``key``) values in a raw config mapping."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." in dotted:
            section, key = dotted.split(".", 1)
            table = out.setdefault(section, {})
            if isinstance(table, dict):  # else validation names the section that is not a table
                table[key] = value
        else:
            out[dotted] = value
    return out


__all__ = ["apply_overrides", "fail", "friendly_errors", "print_table", "summary_table"]
