"""fedlake.algorithms."""
