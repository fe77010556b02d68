"""Executors: where clients run."""

from fedlake.backends.base import Executor
from fedlake.backends.inline import InlineExecutor
from fedlake.backends.process import ProcessExecutor

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor"]
