"""fedlake.backends."""
