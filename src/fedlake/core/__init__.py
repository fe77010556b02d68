"""fedlake.core."""
