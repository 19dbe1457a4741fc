"""The ``Prefer: wait=N`` request header (RFC 7240), for ``POST .../jobs``.

A client that would rather hold its request open for a while than poll says how long;
the gateway waits up to that (capped) and answers with the result when it comes in
time, else 202 as usual. Preferences are hints: a malformed one is ignored, as the RFC
asks, never refused.
"""

from __future__ import annotations

from collections.abc import Iterable


def preferred_wait(values: Iterable[str], cap_s: float) -> float | None:
    """Seconds to wait from the ``Prefer`` header values (capped at ``cap_s``), or None."""
    for value in values:
        for pref in value.split(","):
            token, _, arg = pref.strip().partition("=")
            if token.strip().lower() != "wait":
                continue
            arg = arg.split(";", 1)[0].strip().strip('"')
            if arg.isascii() and arg.isdigit():  # isdigit alone takes "²", which float() refuses
                return min(float(arg), cap_s)
    return None


def applied(wait_s: float) -> str:
    """The ``Preference-Applied`` value for a wait that was honoured."""
    return f"wait={wait_s:g}"
