"""fedlake.transforms."""
