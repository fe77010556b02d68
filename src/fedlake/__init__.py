"""fedlake."""
