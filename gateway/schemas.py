"""The HTTP API's request and response shapes, as pydantic models.

They are the one description of the wire: the infer and jobs routes validate a request's
JSON header with ``InferRequest``, the other routes answer these models, and the OpenAPI
document at ``/openapi.json`` is generated from them, so the documentation cannot drift
from what is checked. Field names follow the Open Inference Protocol (KServe v2), so
existing clients (``tritonclient.http``) read the answers unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

#: A parameter value, as the protocol allows them: a string, a number or a boolean.
ParameterValue = str | int | float | bool
Parameters = dict[str, ParameterValue]


class _Wire(BaseModel):
    # Strict: a shape of ["3"] or a binary_data of "yes" is refused by name, not coerced.
    # Unknown fields are ignored, as the protocol lets clients send extensions' fields.
    model_config = ConfigDict(strict=True, extra="ignore")


class ErrorBody(_Wire):
    """Every error the gateway answers (4xx and 5xx), as the protocol shapes it."""

    error: str = Field(description="What went wrong; for a bad input, what was expected and what came.")


class RequestInput(_Wire):
    """One input tensor of an inference request."""

    name: str = Field(min_length=1, max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        max_length=33,
        description="Including the leading batch dimension N: N inputs make N jobs.",
    )
    datatype: str = Field(description="FP32, FP16, FP64, INT8 … INT64, UINT8 … UINT64 or BOOL.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size: the tensor's bytes follow the JSON header."
    )
    data: list[Any] | None = Field(
        default=None,
        description="The elements in row-major order, flat or nested; absent for a binary input.",
    )


class RequestOutput(_Wire):
    """An output the client asks for (all outputs when the request lists none)."""

    name: str = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data: answer this output as raw bytes after the JSON header."
    )


class InferRequest(_Wire):
    """An inference request (also the body of ``POST .../jobs``)."""

    id: str | None = Field(default=None, max_length=256, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description=(
            "binary_data_output (bool): every output as raw bytes; priority (high, normal, low, "
            "or as Triton's 0 = default, 1 = high, 2 = normal, 3 = low); "
            "no_cache (bool): compute even when a result is cached; deadline_ms (number): a job "
            "that reaches a worker later is not computed (504); bulk (jobs only): per_input."
        ),
    )
    inputs: list[RequestInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=64)


class ResponseOutput(_Wire):
    """One output tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes after the header."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferResponse(_Wire):
    """The outputs of N inputs, stacked along the leading batch dimension."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = Field(
        default=None, description="cached: how many of the N results came from the cache."
    )
    outputs: list[ResponseOutput]


class ServerMetadata(_Wire):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Wire):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for the batch dimension and any dynamic dimension.")


class ModelMetadata(_Wire):
    name: str
    versions: list[str] = Field(description="The model's inferq variants (fp32, int8, savedmodel, …).")
    platform: str = Field(description="The runtime that serves it (litert, tensorflow).")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters | None = Field(
        default=None,
        description="model_version: the model's own version; max_batch_size: the worker's batch.",
    )


class ModelReady(_Wire):
    name: str
    version: str
    ready: bool


class Liveness(_Wire):
    live: bool


class Readiness(_Wire):
    ready: bool
    broker: bool
    results: bool
    workers: int = Field(description="Live workers (by heartbeat).")
    models: int = Field(description="Model variants the live workers serve.")


class JobState(_Wire):
    """An asynchronous job as ``GET /v2/jobs/{id}`` shows it."""

    id: str = Field(description="The job's handle: h- and 32 hex digits, unguessable.")
    location: str = Field(description="Where to poll it: /v2/jobs/{id}.")
    status: str = Field(
        description="queued, running, success, failure, expired, cancelled or lost (its message is gone)."
    )
    model_name: str | None = None
    model_version: str | None = None
    cached: bool | None = None
    timing: dict[str, float | int | None] | None = Field(
        default=None, description="Milliseconds: queue_ms, batch_wait_ms, compute_ms, processing_ms …"
    )
    outputs: list[ResponseOutput] | None = Field(
        default=None, description="With status success: the outputs, with a batch dimension of 1."
    )
    error: str | None = Field(default=None, description="With failure, expired, cancelled or lost: why.")


class JobList(_Wire):
    """The answer to a bulk submit: one job per input, in input order."""

    jobs: list[JobState]


class CancelResult(_Wire):
    id: str
    outcome: str = Field(
        description="cancelled; or, nothing changed: already_cancelled, running, finished, or shared "
        "(other API keys submitted the same input: their job is left alone)."
    )


class LatencyPercentiles(_Wire):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class ModelStats(_Wire):
    """One variant's recent load, from inferq's own job timing."""

    name: str
    version: str
    queue_depth: int | None = Field(default=None, description="Jobs waiting in the variant's queue.")
    workers: int | None = None
    jobs_per_s: float | None = None
    queue_ms: LatencyPercentiles
    compute_ms: LatencyPercentiles
    processing_ms: LatencyPercentiles


class StatsResponse(_Wire):
    model_stats: list[ModelStats]
