"""fedlake.data."""
