"""fedlake.orchestration."""
