"""The attack-evaluation harness: which defence holds against which attack, on your data."""

from fedlake.harness.evaluate import GridOutcome, grid_dir, run_grid
from fedlake.harness.grid import Cell, grid_cells, run_cell

__all__ = ["Cell", "GridOutcome", "grid_cells", "grid_dir", "run_cell", "run_grid"]
