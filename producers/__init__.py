"""What a web backend imports to submit inference jobs and read their results.

    from producers import Client
    client = Client.from_env()
    job = client.submit("digits", x, variant="int8")
    res = job.wait(timeout=10)

Never imports TensorFlow or LiteRT.
"""

from producers.client import Client
from producers.job import Job
from tasks.errors import (
    BadInput,
    BrokerUnavailable,
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
from tasks.schema import CancelOutcome, JobStatus, Timing
from tasks.wire import Result

__all__ = [
    "BadInput",
    "BrokerUnavailable",
    "CancelOutcome",
    "Client",
    "Expired",
    "IncompatibleVersion",
    "InferqError",
    "Job",
    "JobCancelled",
    "JobNotFound",
    "JobStatus",
    "ModelNotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "Result",
    "Timeout",
    "Timing",
    "TransientError",
]
