"""Differential privacy: mechanisms, the ledger of what was applied, and its accountant."""
