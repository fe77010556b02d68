"""fedlake.cli."""
