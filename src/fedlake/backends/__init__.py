"""Executors: where clients run (in this process, or in a pool of worker processes)."""

from fedlake.backends.inline import InlineExecutor
from fedlake.backends.process import ProcessExecutor
from fedlake.backends.registry import EXECUTORS

__all__ = ["EXECUTORS", "InlineExecutor", "ProcessExecutor"]
