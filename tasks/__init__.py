"""The contract producers and workers share: names, settings, codec, keys, schema, errors.

Light on purpose: importing ``tasks`` pulls in Celery, numpy and msgpack, never
TensorFlow or LiteRT.
"""

from tasks.app import create_app
from tasks.errors import (
    BadInput,
    BrokerUnavailable,
    ConfigError,
    Expired,
    IncompatibleVersion,
    InferqError,
    JobCancelled,
    JobNotFound,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    Timeout,
    TransientError,
)
from tasks.schema import CancelOutcome, JobStatus, ModelInfo, TensorSpec, Timing
from tasks.settings import Settings
from tasks.wire import Request, Result

__all__ = [
    "BadInput",
    "BrokerUnavailable",
    "CancelOutcome",
    "ConfigError",
    "Expired",
    "IncompatibleVersion",
    "InferqError",
    "JobCancelled",
    "JobNotFound",
    "JobStatus",
    "ModelInfo",
    "ModelNotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "Request",
    "Result",
    "Settings",
    "TensorSpec",
    "Timeout",
    "Timing",
    "TransientError",
    "create_app",
]
