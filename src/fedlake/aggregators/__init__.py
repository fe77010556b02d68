"""fedlake.aggregators."""
