"""fedlake.client."""
