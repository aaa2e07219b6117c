"""Hooks the tile service calls after an audited open of a slide (its ``.dzi`` or ``info.json``).

``tiles`` does not know what a slide is for; a higher layer that cares (``wsi``'s frozen sections record the
first time a pathologist opens one of a request's slides) registers a hook here. A hook that fails is logged and
never fails the open: viewing the slide matters more than the bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime

log = logging.getLogger("archipel.tiles")

#: Called as ``hook(runtime, principal, slide_id)`` after the policy allowed the open and it was audited.
OpenHook = Callable[[Runtime, Principal, str], None]

_hooks: dict[str, OpenHook] = {}


def register_open_hook(name: str, hook: OpenHook) -> None:
    """Install (or replace) the hook called ``name``."""
    _hooks[name] = hook


def slide_opened(rt: Runtime, principal: Principal, slide_id: str) -> None:
    """Run every hook for an allowed, audited open of ``slide_id`` by ``principal``."""
    for name, hook in list(_hooks.items()):
        try:
            hook(rt, principal, slide_id)
        except Exception:
            log.exception("event=slide_open_hook_failed hook=%s slide=%s", name, slide_id)
