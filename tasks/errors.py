"""The error hierarchy, and how an error crosses the wire.

A worker raises one of these; Celery stores it as ``exc_type`` + ``exc_message``
(never pickled) and the client raises the same class again from those two fields.
``cacheable`` says whether the failure is a property of the input (so the same input
will always fail and the failure may be served from the cache) or of the moment.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar


class InferqError(Exception):
    """Base class of every error inferq raises on purpose."""

    #: An error caused by the input itself is cached like a result; others are not.
    cacheable: ClassVar[bool] = False
    #: The same call may succeed if made again later (the moment's fault, not the call's).
    retryable: ClassVar[bool] = False

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

    retryable = True


class BrokerUnavailable(TransientError):
    """Redis (the broker or the result backend) did not answer within the call's bound,
    or refused the connection. After ``submit``, the job may or may not be queued:
    submitting the same input again is safe (it is shared, or computed once)."""


class JobNotFound(InferqError):
    """No job with this id is known: never sent, or its result expired from the cache."""


class JobCancelled(InferqError):
    """The job was cancelled (``Client.cancel``, or Celery's revoke) before a worker ran it."""


class NotReady(InferqError):
    """The job is queued or running: its result is not there yet."""

    retryable = True


class Timeout(InferqError):
    """Waiting for a result took longer than the caller allowed."""


class Expired(InferqError):
    """The job passed its deadline before it was computed, or its result expired."""


class Overloaded(InferqError):
    """The model's queue is deeper than ``INFERQ_MAX_QUEUE_DEPTH``: the producer refuses
    instead of growing Redis without bound."""

    retryable = True


class ConfigError(InferqError):
    """A setting or a model folder is invalid; raised at start-up, never per job."""


class IncompatibleVersion(InferqError):
    """A stored record is in a wire version this side does not read (``tasks/wire/``):
    one side was upgraded and the other not yet."""


_BY_NAME: dict[str, type[InferqError]] = {
    cls.__name__: cls
    for cls in (
        InferqError,
        BadInput,
        PayloadTooLarge,
        ModelNotFound,
        TransientError,
        BrokerUnavailable,
        JobNotFound,
        JobCancelled,
        NotReady,
        Timeout,
        Expired,
        Overloaded,
        ConfigError,
        IncompatibleVersion,
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


@cache
def cacheable_types() -> tuple[str, ...]:
    """The error types whose stored failure may be served from the cache (the input's fault).

    The cache check in Redis (``tasks/lua/status_record.lua``) is handed this list, so
    the Lua and Python readers of a status record cannot disagree on it.
    """
    return tuple(sorted(name for name, cls in _BY_NAME.items() if cls.cacheable))
