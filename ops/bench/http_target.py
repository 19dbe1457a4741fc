"""``inferq bench --target http://host:port``: the same load, sent through the HTTP gateway.

An independent HTTP client of the Open Inference Protocol (standard library only, one
keep-alive connection per sender thread), so the gateway is measured as a user of it
would meet it, not through inferq's own code. Two paths:

- ``infer`` (default): ``POST /v2/models/{m}/versions/{v}/infer``, inputs in the binary
  tensor extension, the answer read in JSON. The request is held open until the result.
- ``jobs``: ``POST .../jobs`` (202 + ``Location``, or 200 when cached), then
  ``GET /v2/jobs/{id}`` with ``Prefer: wait=N`` until it is done: the submit-and-poll path
  of web clients, with its timing (queue, compute...) read from the job.

It offers what ``run_bench`` needs of a client: ``submit`` (a job with ``wait``) and
``wait_all``. An infer request returns when its result does, so it is a closed-loop load
(``--concurrency``); an open-loop rate is refused for it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from tasks.errors import (
    BadInput,
    BrokerUnavailable,
    InferqError,
    JobNotFound,
    ModelNotFound,
    PayloadTooLarge,
    Timeout,
)
from tasks.schema import ModelInfo, TensorSpec, Timing
from tasks.wire import Result

#: The protocol's tensor data types and numpy's names for them.
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_NAMES = {v: k for k, v in DATATYPES.items()}

#: HTTP statuses and the inferq errors they stand for.
_ERRORS: dict[int, type[InferqError]] = {
    400: BadInput,
    404: ModelNotFound,
    413: PayloadTooLarge,
    503: BrokerUnavailable,
    504: Timeout,
}

PATHS = ("infer", "jobs")


@dataclass
class HttpJob:
    """One request's outcome (``infer``), or a submitted job to poll (``jobs``)."""

    target: HttpTarget = field(repr=False)
    enqueued_at: float
    location: str | None = None
    outcome: Result | InferqError | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def wait(self, timeout: float | None = None) -> Result:
        if self.outcome is None:
            self.outcome = self.target.poll(self, timeout or 60.0)
        if isinstance(self.outcome, InferqError):
            raise self.outcome
        return self.outcome


class HttpTarget:
    """A gateway at ``url``, driven like a ``Client`` by ``run_bench``."""

    def __init__(self, url: str, *, path: str = "infer", api_key: str = "", timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"--target: expected http://host:port, got {url!r}")
        if path not in PATHS:
            raise BadInput(f"--http-path: expected one of {list(PATHS)}, got {path!r}")
        self.url = url
        self.path = path
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.https = parts.scheme == "https"
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # --- what run_bench and the CLI use ----------------------------------------------

    def model_info(self, model: str, variant: str | None = None) -> ModelInfo:
        path = f"/v2/models/{model}" + (f"/versions/{variant}" if variant else "")
        status, _, body = self.request("GET", path)
        if status != 200:
            raise self._error(status, body, f"reading {path}")
        meta = json.loads(body)
        return ModelInfo(
            name=meta["name"],
            variant=variant or (meta.get("versions") or ["fp32"])[0],
            version=str((meta.get("parameters") or {}).get("model_version", "")),
            runtime=str(meta.get("platform", "")),
            inputs=tuple(_spec(t) for t in meta["inputs"]),
            outputs=tuple(_spec(t) for t in meta["outputs"]),
        )

    def submit(
        self, model: str, x: np.ndarray, *, variant: str | None = None, no_cache: bool = False
    ) -> HttpJob:
        """``infer``: the whole request (returns a finished job); ``jobs``: the POST."""
        t0 = time.time()
        version = f"/versions/{variant}" if variant else ""
        body, header_len = self._binary_request(x, no_cache)
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_len),
        }
        route = "infer" if self.path == "infer" else "jobs"
        status, _, raw = self.request("POST", f"/v2/models/{model}{version}/{route}", body, headers)
        job = HttpJob(self, t0)
        if self.path == "infer":
            job.outcome = self._infer_result(status, raw, model, variant, t0)
        elif status == 202:
            job.location = json.loads(raw)["location"]
        else:
            job.outcome = self._job_result(status, raw, t0)
        return job

    def wait_all(self, jobs: list[HttpJob], timeout: float | None = None) -> list[Result | InferqError]:
        out: list[Result | InferqError] = []
        for j in jobs:
            try:
                out.append(j.wait(timeout))
            except InferqError as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the jobs path ------------------------------------------------------------------

    def poll(self, job: HttpJob, timeout: float) -> Result | InferqError:
        """``GET`` the job with ``Prefer: wait`` until it is done or ``timeout`` passes."""
        assert job.location is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Timeout(f"job {job.location} not done within {timeout:g} s")
            wait = max(1, min(30, int(left)))
            status, _, raw = self.request("GET", job.location, headers={"Prefer": f"wait={wait}"})
            if status == 200 and json.loads(raw).get("status") in ("queued", "running"):
                continue
            return self._job_result(status, raw, job.enqueued_at)

    # --- HTTP -----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on this thread's keep-alive connection (reopened once if it dropped)."""
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                resp = conn.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise BrokerUnavailable(f"gateway {self.url}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    # --- the protocol -----------------------------------------------------------------------

    def _binary_request(self, x: np.ndarray | dict[str, np.ndarray], no_cache: bool) -> tuple[bytes, int]:
        """Inputs in the binary tensor extension: a JSON header, then the raw tensors."""
        named = x if isinstance(x, dict) else {"": x}
        inputs, blobs = [], []
        for name, arr in named.items():
            arr = np.ascontiguousarray(arr)
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            inputs.append(
                {
                    "name": name or self._only_input,
                    "shape": [1, *arr.shape],
                    "datatype": _NAMES[str(arr.dtype)],
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
            blobs.append(blob)
        head: dict[str, Any] = {"inputs": inputs}
        if no_cache:
            head["parameters"] = {"no_cache": True}
        header = json.dumps(head).encode()
        return header + b"".join(blobs), len(header)

    _only_input = "input"

    def set_input_name(self, info: ModelInfo) -> None:
        if len(info.inputs) == 1:
            self._only_input = info.inputs[0].name

    def _infer_result(
        self, status: int, raw: bytes, model: str, variant: str | None, t0: float
    ) -> Result | InferqError:
        done = time.time()
        if status != 200:
            return self._error(status, raw, "infer")
        doc = json.loads(raw)
        outputs = {
            o["name"]: np.asarray(o["data"], DATATYPES.get(o["datatype"], "float32")).reshape(o["shape"])[0]
            for o in doc.get("outputs", [])
        }
        cached = bool((doc.get("parameters") or {}).get("cached"))
        timing = Timing(t0, 0.0, 0.0, done, 0.0, 0.0, 0.0, 0.0, 1, end_to_end_ms=(done - t0) * 1e3)
        return Result(
            "",
            doc.get("model_name", model),
            doc.get("model_version", variant or ""),
            "",
            outputs,
            timing,
            cached,
        )

    def _job_result(self, status: int, raw: bytes, t0: float) -> Result | InferqError:
        done = time.time()
        if status != 200:
            return self._error(status, raw, "job")
        doc = json.loads(raw)
        if doc.get("status") != "success":
            return InferqError(f"job {doc.get('id')}: {doc.get('status')}: {doc.get('error')}")
        timing = Timing.from_dict(doc["timing"])
        timing.end_to_end_ms = (done - t0) * 1e3
        outputs = {
            o["name"]: np.asarray(o["data"], DATATYPES.get(o["datatype"], "float32")).reshape(o["shape"])[0]
            for o in doc.get("outputs", [])
        }
        return Result(
            doc["id"],
            doc.get("model_name", ""),
            doc.get("model_version", ""),
            "",
            outputs,
            timing,
            bool(doc.get("cached")),
        )

    def _error(self, status: int, raw: bytes, what: str) -> InferqError:
        try:
            message = json.loads(raw).get("error", "")
        except (ValueError, AttributeError):
            message = raw[:200].decode(errors="replace")
        kind = _ERRORS.get(status, JobNotFound if status == 404 else InferqError)
        return kind(f"{what}: HTTP {status}: {message}")


def _spec(t: dict[str, Any]) -> TensorSpec:
    shape = [None if d == -1 else int(d) for d in t["shape"]]
    return TensorSpec(t["name"], tuple(shape[1:]), DATATYPES.get(t["datatype"], "float32"))
