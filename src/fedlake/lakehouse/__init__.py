"""fedlake.lakehouse."""
