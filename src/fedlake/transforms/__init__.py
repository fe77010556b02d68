"""Vector transforms: local steps, upload processing, server optimisers."""

from fedlake.transforms.server import server_sgd

__all__ = ["server_sgd"]
