"""Client and server plugins: SCAFFOLD, FedPer, Ditto, fine-tuning, error feedback, local-DP
reports and the DP-SGD client budget, each a factory of pure hooks (``fedlake.core.plugin``)."""

from fedlake.plugins.dpsgd_budget import dpsgd_budget
from fedlake.plugins.error_feedback import error_feedback
from fedlake.plugins.personal import ditto, fedper, finetune, personalization
from fedlake.plugins.private_reports import private_reports
from fedlake.plugins.scaffold import CONTROL, scaffold_client, scaffold_server

__all__ = [
    "CONTROL",
    "ditto",
    "dpsgd_budget",
    "error_feedback",
    "fedper",
    "finetune",
    "personalization",
    "private_reports",
    "scaffold_client",
    "scaffold_server",
]
