"""The error hierarchy, and how an error crosses the wire.

A worker raises one of these; Celery stores it as ``exc_type`` + ``exc_message``
(never pickled) and the client raises the same class again from those two fields.
``cacheable`` says whether the failure is a property of the input (so the same input
will always fail and the failure may be served from the cache) or of the moment.
"""

from __future__ import annotations

from typing import Any, ClassVar


class InferqError(Exception):
    """Base class of every error inferq raises on purpose."""

    #: An error caused by the input itself is cached like a result; others are not.
    cacheable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(InferqError):
    """The input cannot be run: wrong shape, dtype, values, size or encoding."""

    cacheable = True


class PayloadTooLarge(BadInput):
    """The encoded input is over the configured payload limit."""


class ModelNotFound(InferqError):
    """No such model, variant or version is served (or known to the producer)."""


class TransientError(InferqError):
    """A failure of the moment (runtime crash, lost connection); retrying may work."""


class Timeout(InferqError):
    """Waiting for a result took longer than the caller allowed."""


class Expired(InferqError):
    """The job passed its deadline before it was computed, or its result expired."""


class Overloaded(InferqError):
    """The model's queue is deeper than ``INFERQ_MAX_QUEUE_DEPTH``: the producer refuses
    instead of growing Redis without bound."""


class ConfigError(InferqError):
    """A setting or a model folder is invalid; raised at start-up, never per job."""


_BY_NAME: dict[str, type[InferqError]] = {
    cls.__name__: cls
    for cls in (
        InferqError,
        BadInput,
        PayloadTooLarge,
        ModelNotFound,
        TransientError,
        Timeout,
        Expired,
        Overloaded,
        ConfigError,
    )
}


def error_from_wire(exc_type: str, exc_message: Any) -> InferqError:
    """Rebuild the error a worker raised from Celery's stored ``exc_type``/``exc_message``.

    Unknown types (a Python exception that escaped a worker) become ``TransientError``
    with the original type in the message, so callers only ever see this hierarchy.
    """
    if isinstance(exc_message, (list, tuple)):
        message = str(exc_message[0]) if len(exc_message) == 1 else " ".join(map(str, exc_message))
    else:
        message = str(exc_message)
    cls = _BY_NAME.get(exc_type)
    if cls is None:
        return TransientError(f"{exc_type}: {message}")
    return cls(message)


def is_cacheable(exc_type: str) -> bool:
    """Whether a stored failure of this type may be served from the cache (the input's fault).

    (The producers' cache-check Lua script names the same types: BadInput, PayloadTooLarge.)
    """
    cls = _BY_NAME.get(exc_type)
    return cls is not None and cls.cacheable
