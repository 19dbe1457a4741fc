"""What a web backend imports to submit inference jobs and read their results.

    from producers import Client
    client = Client.from_env()
    job = client.submit("digits", x, variant="int8")
    res = job.wait(timeout=10)

or, on an event loop (FastAPI, aiohttp), the same calls awaited:

    async with AsyncClient.from_env() as client:
        job = await client.submit("digits", x)
        res = await job.wait(timeout=10)

Never imports TensorFlow or LiteRT.
"""

from producers.tasks_check import check_tasks_package

# Before anything below imports ``tasks``: a user's own tasks.py must not shadow it unseen.
check_tasks_package()

from producers.async_client import AsyncClient  # noqa: E402
from producers.bulk import BulkResult  # noqa: E402
from producers.client import Client  # noqa: E402
from producers.job import AsyncJob, Job  # noqa: E402
from tasks.errors import (  # noqa: E402
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
from tasks.schema import CancelOutcome, JobStatus, Timing  # noqa: E402
from tasks.wire import Result  # noqa: E402

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "BadInput",
    "BrokerUnavailable",
    "BulkResult",
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
