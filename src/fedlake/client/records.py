"""A client's record: its plugins' states, and those waiting for the server's acknowledgement.

``{"states": {plugin: state}, "pending": {"tag": (round, attempt), "states": {...}}}``.
A plugin whose new state counts only once the server aggregated the contribution that
made it (SCAFFOLD's ``c_i``: its ``commit`` hook) keeps it pending with that
contribution's tag; the next task's ack for the client says whether it counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedlake.client.stores import Record
from fedlake.core.plugin import ClientPlugin
from fedlake.core.task import Tag

__all__ = ["committed_states", "next_record"]


def committed_states(
    record: Mapping[str, Any] | None,
    plugins: Sequence[ClientPlugin],
    ack: Tag | None,
    dim: int,
) -> dict[str, Any]:
    """The plugins' states a round starts from: pending ones committed or dropped by ``ack``
    (the server's last aggregated contribution of this client), missing ones initialised."""
    record = record or {}
    states = dict(record.get("states") or {})
    pending = record.get("pending")
    if pending:
        acked = ack is not None and tuple(ack) == tuple(pending["tag"])
        by_name = {p.name: p for p in plugins}
        for name, new in pending["states"].items():
            plugin = by_name.get(name)
            if plugin is not None and plugin.commit is not None:
                states[name] = plugin.commit(states.get(name), new, acked)
    for plugin in plugins:
        if plugin.init is not None and states.get(plugin.name) is None:
            states[plugin.name] = plugin.init(dim)
    return states


def next_record(
    plugins: Sequence[ClientPlugin],
    committed: Mapping[str, Any],
    states: Mapping[str, Any],
    tag: Tag,
) -> Record | None:
    """The record after a round: new states kept at once, or pending under ``tag`` for
    plugins that wait for the server's acknowledgement; None when there is nothing."""
    kept = dict(committed)
    waiting: dict[str, Any] = {}
    for plugin in plugins:
        new = states.get(plugin.name)
        if plugin.needs_ack:
            waiting[plugin.name] = new
        else:
            kept[plugin.name] = new
    kept = {k: v for k, v in kept.items() if v is not None}
    if not kept and not waiting:
        return None
    if waiting:
        return {"states": kept, "pending": {"tag": tag, "states": waiting}}
    return {"states": kept}
