"""Optional API keys (``Authorization: Bearer <key>``) and the owner a key stands for.

A job made through the gateway is owned by the key that made it: the owner string,
sha256 of the key (never the key itself, which then never reaches Redis), is passed to
``AsyncClient.handle``/``resolve``, so another key's handle answers 404. Keys are
compared as their digests with ``hmac.compare_digest``, against every configured key,
so the time taken says nothing about how much of a key was right or which one matched.
Without configured keys every caller is the same owner, ``anonymous``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import Unauthorized

#: The owner of every job when no keys are configured.
ANONYMOUS = "anonymous"

#: Documents the scheme in the OpenAPI (``auto_error`` off: a missing key is ours to answer).
bearer = HTTPBearer(auto_error=False, description="One of the gateway's API keys (INFERQ_API_KEYS).")


def owner_of(key: str) -> str:
    """The owner string of a key: its sha256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCheck:
    """Checks a request's bearer key against the configured ones; returns its owner."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner(self, authorization: str | None) -> str:
        """The owner for an ``Authorization`` header value; ``Unauthorized`` when keys are on
        and it is missing, not a bearer key, or not one of the keys."""
        if not self._digests:
            return ANONYMOUS
        if not authorization:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("expected Authorization: Bearer <key>")
        given = hashlib.sha256(key.encode()).digest()
        matched = False
        for digest in self._digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(given, digest)
        if not matched:
            raise Unauthorized("the API key is not valid")
        return given.hex()


async def require_owner(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None
) -> str:
    """FastAPI dependency: the caller's owner string, or 401. (``bearer`` is there for the
    OpenAPI document; the header is read here, so every refusal has the same shape.)"""
    check: KeyCheck = request.app.state.keys
    return check.owner(request.headers.get("authorization"))


#: A route parameter that is the caller's owner string (401 before the route runs, else).
Owner = Annotated[str, Depends(require_owner)]
