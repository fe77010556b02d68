"""The operator's status page: one HTML document (``status.html``, package data) that polls
``/v1/status`` every 2 seconds.

Self-contained (no script or style from anywhere else): the page must work on a machine
with no internet, behind the same token as the status API.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["STATUS_HTML"]

STATUS_HTML = resources.files(__package__).joinpath("status.html").read_text(encoding="utf-8")
