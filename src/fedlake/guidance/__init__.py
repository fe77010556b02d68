"""Guidance: plans and advice computed from the library's own calculators."""

from fedlake.guidance.markdown import render
from fedlake.guidance.plan import CHAINS, SCENARIOS, Plan, PlanInputs, make_plan, model_params

__all__ = ["CHAINS", "SCENARIOS", "Plan", "PlanInputs", "make_plan", "model_params", "render"]
