"""fedlake.models."""
