"""fedlake.models: small models and the trainer registry.

Importing this package needs only numpy. The torch factories live in their
own modules: ``from fedlake.models.mlp import mlp`` and
``from fedlake.models.cnn1d import cnn1d``.
"""

from fedlake.models.registry import MODEL_KINDS, build_trainer

__all__ = ["MODEL_KINDS", "build_trainer"]
