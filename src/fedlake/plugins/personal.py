"""Personalisation as client plugins: the plugin of a :class:`Personalization`'s kind.

``finetune`` (plugins/finetune.py), ``fedper`` (plugins/fedper.py) or ``ditto``
(plugins/ditto.py); each keeps the client's personal values as its state and says, with
its ``personal`` hook, which model the client would use.
"""

from __future__ import annotations

from fedlake.core.personal import Personalization
from fedlake.core.plugin import ClientPlugin
from fedlake.plugins.ditto import ditto
from fedlake.plugins.fedper import fedper, fedper_start, kept_personal
from fedlake.plugins.finetune import finetune

__all__ = ["ditto", "fedper", "fedper_start", "finetune", "kept_personal", "personalization"]


def personalization(p: Personalization) -> ClientPlugin:
    """The plugin of ``p``'s kind."""
    if p.kind == "fedper":
        return fedper(p.layers)
    if p.kind == "ditto":
        return ditto(p)
    return finetune(p)
