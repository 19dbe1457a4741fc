"""The version every wire form is written in, and how a reader shows a version it met."""

from __future__ import annotations

from typing import Any

from tasks import constants as C
from tasks.codec import quote

#: The version every form is written in (``v``); a form without ``v`` is version 1.
VERSION = C.WIRE_VERSION


def show(v: Any) -> str:
    """A version field for a message: numbers and None as they are, strings shortened."""
    return repr(v) if v is None or isinstance(v, (int, float)) else quote(v)


def as_int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else -1
