"""Whether a live worker serves a model variant, and what to tell a caller when none does.

A job for a variant no live worker serves waits in its queue until one starts; a caller
that only sees a wait until its timeout cannot tell that from a slow worker. The client
knows better: workers' heartbeats (``inferq:workers``) say which variants are served
right now. So a submit to an unserved variant logs a warning (once per variant, until it
is served again), and a ``Timeout`` names the variants nobody serves. Pure code: each
client reads the heartbeats its own way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from producers.health import live_beats
from tasks.errors import Timeout
from tasks.keys import queue_name

log = logging.getLogger(__name__)


def served_by(raw_beats: dict[bytes, bytes], now: float | None = None) -> set[str]:
    """The ``model:variant`` keys that live workers serve, from the heartbeats hash."""
    return {m for b in live_beats(raw_beats, now) for m in b.models}


class ServedWarnings:
    """Warns once per variant submitted to while no live worker serves it."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def check(self, key: str, served: set[str] | None) -> None:
        """Log a warning if ``key`` is not in ``served`` (None: not known, say nothing)."""
        if served is None:
            return
        if key in served:
            self._warned.discard(key)  # warn again if it stops being served
            return
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", unserved_message(key, served))


def unserved_message(key: str, served: set[str]) -> str:
    model, _, variant = key.partition(":")
    others = ", ".join(sorted(served)) or "nothing (no worker is running)"
    return (
        f"no live worker serves {key}: its jobs wait in queue {queue_name(model, variant)} until one "
        f"starts (live workers serve {others})"
    )


def explain_timeout(exc: Timeout, keys: Iterable[str], served: set[str] | None) -> Timeout:
    """``exc``, naming the variants among ``keys`` that no live worker serves, if any."""
    if served is None:
        return exc
    missing = sorted({k for k in keys if k not in served})
    if not missing:
        return exc
    return Timeout(f"{exc.message}: no live worker serves {', '.join(missing)}")
