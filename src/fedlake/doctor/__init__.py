"""``fedlake doctor``: a config checked against best practices, findings with their fix."""

from fedlake.doctor.diagnose import CHECKS, diagnose, diagnose_file
from fedlake.doctor.finding import SEVERITIES, Finding, Severity, has_errors, ordered

__all__ = [
    "CHECKS",
    "SEVERITIES",
    "Finding",
    "Severity",
    "diagnose",
    "diagnose_file",
    "has_errors",
    "ordered",
]
