"""One finding of ``fedlake doctor``: severity, check id, what is wrong (with numbers), fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")  # most severe first


@dataclass(frozen=True)
class Finding:
    """A best-practice finding about a config.

    Args:
        severity: ``error`` (the run would fail or its guarantee would not hold),
            ``warning`` (it runs, but the result will likely disappoint), ``info``.
        check: a stable id such as ``privacy.noise``.
        message: what is wrong, with the numbers that show it.
        fix: what to change in the config.
    """

    severity: Severity
    check: str
    message: str
    fix: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


def ordered(findings: list[Finding]) -> list[Finding]:
    """Findings most severe first, in check order within a severity."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def has_errors(findings: list[Finding]) -> bool:
    """Whether any finding is an error."""
    return any(f.severity == "error" for f in findings)
