"""A catalog of bad inputs, each sent in the same Redis round trip as good jobs.

Every test LPUSHes raw kombu messages onto ``inferq.digits.fp32`` in one call: two good
jobs, the bad message, two more good jobs. The worker takes them in one fetch (proven
by the good jobs sharing ``received_at``). Then: the bad one ends with a stored error
naming what was expected and what came, or (when it has no usable id) with a logged
rejection; the good ones succeed with the right outputs; the worker lives on and serves
a new job. Nothing in any of them is ever unpickled or YAML-loaded.

Kinds (each one test; ``error`` = stored failure, ``log`` = logged rejection):
wrong_shape, wrong_dtype, extra_batch_axis, nan, inf, empty_array, empty_inputs,
missing_input_name, unexpected_input_name, unknown_model, unknown_variant,
other_model_version, payload_too_large, bytes_not_msgpack, truncated_array,
wrong_byte_count, object_dtype, unknown_dtype_name, ragged_nested_list,
strings_for_numbers, ints_beyond_int32, invalid_base64, zero_or_negative_dimension,
billions_of_elements, scalar_for_tensor, unknown_content_type, body_not_its_content_type,
pickle_body, yaml_body, raw_pickle_in_queue (log), raw_yaml_in_queue (log),
not_celery_protocol (log), headers_not_a_map (log), message_without_id (log),
unknown_task_name, model_name_with_path_separators, job_argument_not_a_map,
missing_job_fields, wrong_wire_version, timestamp_beyond_float, foreign_inputs_ref,
bad_item_in_bulk_message, bulk_item_without_usable_id (log).
"""

from __future__ import annotations

import pickle
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis

from producers.client import Client
from tasks.codec import encode_inputs
from tasks.errors import BadInput, IncompatibleVersion, InferqError, ModelNotFound, PayloadTooLarge
from tasks.keys import NAME_RE
from tests.helpers.raw_messages import (
    JSON,
    MSGPACK,
    PICKLE,
    QUEUE,
    YAML,
    RunsCode,
    job_message,
    kombu_message,
    request,
    tagged,
)

pytestmark = pytest.mark.integration


# --- the catalog -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """The bad message, built from (good input, marker path, its id)."""

    make: Callable[[np.ndarray, Path, str], bytes]
    error: tuple[type[InferqError], str] | None = None  # stored under the id: type, regex
    logged: str | None = None  # else: this rejection appears once more in the worker log


Z = np.zeros((28, 28, 1), np.float32)


def arr(a: np.ndarray) -> Callable[[np.ndarray, Path, str], bytes]:
    return lambda x, m, i: job_message(request(encode_inputs({"image": a})), job_id=i)


def bulk_with_a_good_item(x: np.ndarray, i: str, second: dict[str, object]) -> bytes:
    """A bulk message: a good item (``<i>-ok``, expected to succeed), then ``second``."""
    good = {"id": f"{i}-ok", "inputs": encode_inputs({"image": x})}
    return job_message(request(None) | {"items": [good, second]}, job_id="bulk-" + i)


def req(**over: object) -> Callable[[np.ndarray, Path, str], bytes]:
    return lambda x, m, i: job_message(request(encode_inputs({"image": x}), **over), job_id=i)


def inputs(value: object, ctype: str = MSGPACK) -> Callable[[np.ndarray, Path, str], bytes]:
    return lambda x, m, i: job_message(request(value), job_id=i, ctype=ctype)


NOT_ACCEPTED = (
    r"content type '{}' is not accepted \(expected one of \['application/json', 'application/x-msgpack'\]\)"
)
CATALOG: dict[str, Case] = {
    "wrong_shape": Case(arr(Z[:, :, 0]), (BadInput, r"expected shape \[28, 28, 1\], got \[28, 28\]")),
    "wrong_dtype": Case(arr(Z.astype(np.float64)), (BadInput, r"expected dtype float32, got float64")),
    "extra_batch_axis": Case(
        arr(Z[None]),
        (BadInput, r"expected shape \[28, 28, 1\], got \[1, 28, 28, 1\] \(send one input without"),
    ),
    "nan": Case(arr(Z + np.nan), (BadInput, r"expected finite values, got 784 NaN and 0 inf")),
    "inf": Case(
        arr(np.where(np.arange(784).reshape(Z.shape) == 99, np.inf, Z).astype(np.float32)),
        (BadInput, r"expected finite values, got 0 NaN and 1 inf"),
    ),
    "empty_array": Case(
        inputs({"image": []}, JSON), (BadInput, r"expected shape \[28, 28, 1\], got an empty array \(0,\)")
    ),
    "empty_inputs": Case(inputs({}), (BadInput, r"non-empty map of name -> array, got an empty map")),
    "missing_input_name": Case(
        lambda x, m, i: job_message(request(encode_inputs({"img": x})), job_id=i),
        (BadInput, r"expected inputs \['image'\], got \['img'\] \(missing \['image'\]\)"),
    ),
    "unexpected_input_name": Case(
        lambda x, m, i: job_message(request(encode_inputs({"image": x, "mask": x})), job_id=i),
        (BadInput, r"got \['image', 'mask'\] \(unexpected \['mask'\]\)"),
    ),
    "unknown_model": Case(
        req(model="nosuch"), (ModelNotFound, r"not serve nosuch:fp32; it serves \[.*'digits:fp32'")
    ),
    "unknown_variant": Case(req(variant="int4"), (ModelNotFound, r"not serve digits:int4; it serves \[")),
    "other_model_version": Case(
        req(version="0ld"), (ModelNotFound, r"asks for version 0ld, this worker serves")
    ),
    "payload_too_large": Case(
        inputs(b"\0" * (16 * 1024 * 1024 + 1)),
        (PayloadTooLarge, r"input payload is 16777217 bytes, over the limit of 16777216 bytes"),
    ),
    "bytes_not_msgpack": Case(
        inputs(b"\xc1\xc1 no"), (BadInput, r"not valid msgpack .*expected a map of name")
    ),
    "truncated_array": Case(
        lambda x, m, i: job_message(request(encode_inputs({"image": x})[:-100]), job_id=i),
        (BadInput, r"not valid msgpack .*expected a map of name -> \{dtype, shape, data\}"),
    ),
    "wrong_byte_count": Case(
        inputs(tagged("<f4", [28, 28, 1], b"\0" * 3000)),
        (BadInput, r"shape \[28, 28, 1\] of float32 needs 3136 bytes, got 3000 bytes"),
    ),
    "object_dtype": Case(
        inputs(tagged("|O", [28, 28, 1], b"\0" * 6272)),
        (BadInput, r"dtype must be bool, int, uint or float, got '\|O' \('O' kind\)"),
    ),
    "unknown_dtype_name": Case(
        inputs(tagged("float33", [1], b"\0" * 4)), (BadInput, r"unknown dtype 'float33'")
    ),
    "ragged_nested_list": Case(
        inputs({"image": [[1.0, 2.0], [3.0]]}, JSON), (BadInput, r"nested list is ragged .*shape was \(2,\)")
    ),
    "strings_for_numbers": Case(
        inputs({"image": [[0.5, "SECRET-INPUT-8c1f"]]}, JSON),
        (BadInput, r"expected numbers in a rectangular nested list, got elements of dtype <U"),
    ),
    "ints_beyond_int32": Case(
        inputs({"image": [98765432101, 1]}, JSON),
        (BadInput, r"integers must fit in int32 \[-2147483648, 2147483647\], got values outside it"),
    ),
    "invalid_base64": Case(
        inputs({"image": {"dtype": "float32", "shape": [28, 28, 1], "b64": "not base64!!"}}, JSON),
        (BadInput, r"'b64' is not valid base64"),
    ),
    "zero_or_negative_dimension": Case(
        inputs(tagged("<f4", [0, -28, 1], b"")),
        (BadInput, r"every dimension must be a positive integer, got shape \[0, -28, 1\]"),
    ),
    "billions_of_elements": Case(
        inputs(tagged("<f4", [100_000, 100_000, 100], b"\0" * 16)),
        (PayloadTooLarge, r"needs 4000000000000 bytes, over the limit of 16777216 bytes"),
    ),
    "scalar_for_tensor": Case(
        inputs(tagged("<f4", [], b"\0" * 4)), (BadInput, r"expected shape \[28, 28, 1\], got \[\]")
    ),
    "unknown_content_type": Case(
        lambda x, m, i: kombu_message(b"hello", "text/plain", job_id=i),
        (BadInput, NOT_ACCEPTED.format("text/plain")),
    ),
    "body_not_its_content_type": Case(
        lambda x, m, i: kombu_message(msgpack.packb([[{}], {}, {}]), JSON, job_id=i),
        (BadInput, r"message body does not decode as json \((UnicodeDecodeError|JSONDecodeError)\)"),
    ),
    "pickle_body": Case(
        lambda x, m, i: kombu_message(pickle.dumps(RunsCode(f"touch {m}")), PICKLE, job_id=i),
        (BadInput, NOT_ACCEPTED.format(PICKLE)),
    ),
    "yaml_body": Case(
        lambda x, m, i: kombu_message(
            f"!!python/object/apply:os.system ['touch {m}']".encode(), YAML, job_id=i
        ),
        (BadInput, NOT_ACCEPTED.format(YAML)),
    ),
    "raw_pickle_in_queue": Case(
        lambda x, m, i: pickle.dumps(RunsCode(f"touch {m}")),
        logged="not a Celery message (the envelope is not JSON)",
    ),
    "raw_yaml_in_queue": Case(
        lambda x, m, i: f"!!python/object/apply:os.system ['touch {m}']".encode(),
        logged="not a Celery message (the envelope is not JSON)",
    ),
    "not_celery_protocol": Case(
        lambda x, m, i: b'{"hello": "world"}',
        logged="not a Celery message (expected a 'headers' map, got none)",
    ),
    "headers_not_a_map": Case(
        lambda x, m, i: b'{"headers": [1], "properties": {}}',
        logged="not a Celery message (expected a 'headers' map, got list)",
    ),
    "message_without_id": Case(
        lambda x, m, i: job_message(request(encode_inputs({"image": x})), job_id=None),
        logged="message has no task id",
    ),
    "unknown_task_name": Case(
        lambda x, m, i: job_message(["touch", str(m)], job_id=i, task="os.system"),
        (BadInput, r"unknown task 'os.system': this queue only runs 'inferq.predict'"),
    ),
    "model_name_with_path_separators": Case(
        req(model="../../etc/passwd"),
        (
            BadInput,
            rf"model name must match {re.escape(NAME_RE.pattern)} \(letters, digits, _ and -\), "
            r"got '\.\./\.\./etc/passwd'",
        ),
    ),
    "job_argument_not_a_map": Case(
        lambda x, m, i: job_message(["not", "a", "map"], job_id=i),
        (BadInput, r"job argument must be a map with model, variant and inputs, got list"),
    ),
    "missing_job_fields": Case(
        lambda x, m, i: job_message({"model": "digits"}, job_id=i),
        (BadInput, r"job is missing field\(s\) \['variant', 'inputs'\]; expected model, variant and inputs"),
    ),
    # Not BadInput: a version mismatch is not the input's fault and must not be cached.
    "wrong_wire_version": Case(req(v=99), (IncompatibleVersion, r"job wire version must be 1, got 99")),
    "timestamp_beyond_float": Case(
        lambda x, m, i: job_message(
            request({"image": x.tolist()}, enqueued_at=10**400), job_id=i, ctype=JSON
        ),
        (BadInput, r"job field 'enqueued_at' must be a unix time in seconds, got an integer too large"),
    ),
    "foreign_inputs_ref": Case(
        lambda x, m, i: job_message(request(None, inputs_ref="inferq:models"), job_id=i),
        (BadInput, r"'inputs_ref' is not an inferq input key"),
    ),
    "bad_item_in_bulk_message": Case(
        lambda x, m, i: bulk_with_a_good_item(
            x, i, {"id": i, "inputs": encode_inputs({"image": Z + np.nan})}
        ),
        (BadInput, r"expected finite values, got 784 NaN"),
    ),
    "bulk_item_without_usable_id": Case(
        lambda x, m, i: bulk_with_a_good_item(x, i, {"id": "../x", "inputs": encode_inputs({"image": x})}),
        logged="rejected item 1 of bulk message",
    ),
}


# --- the tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heldout(models_dir: Path) -> np.ndarray:
    return np.load(models_dir / "digits" / "data" / "heldout_x.npy")[:4]


@pytest.fixture(scope="module")
def mclient(settings) -> Iterator[Client]:
    with Client(settings) as c:
        yield c


@pytest.fixture(scope="module")
def expected(digits_worker, mclient: Client, heldout: np.ndarray) -> np.ndarray:
    """The digits model's outputs for the good jobs, computed apart from any bad message."""
    results = mclient.wait_all(mclient.submit_many("digits", heldout, variant="fp32"), timeout=60)
    return np.stack([r.outputs["probs"] for r in results])  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def broker(settings) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(settings.broker_url)
    yield r
    r.close()


def push_between_good_jobs(broker: redis.Redis, heldout: np.ndarray, bad: bytes) -> list[str]:
    """Two good jobs, the bad message, two good jobs: one LPUSH, popped in this order."""
    ids = ["good-" + uuid.uuid4().hex for _ in heldout]
    goods = [
        job_message(request(encode_inputs({"image": x})), job_id=j) for x, j in zip(heldout, ids, strict=True)
    ]
    broker.lpush(QUEUE, *goods[:2], bad, *goods[2:])
    return ids


def assert_succeeded(mclient: Client, metas: dict, ids: list[str], expected: np.ndarray) -> None:
    results = [metas[j][0].to_result(cached=False) for j in ids]
    for res, want in zip(results, expected, strict=True):
        assert res.outputs["probs"].shape == (10,)
        np.testing.assert_allclose(res.outputs["probs"], want, atol=1e-5)
    # One fetch stamps one received_at: the bad message, pushed between them, came with them.
    assert len({r.timing.received_at for r in results}) == 1


def assert_worker_serves(digits_worker, mclient: Client, heldout: np.ndarray, expected: np.ndarray) -> None:
    assert digits_worker.alive, digits_worker.log_text()[-3000:]
    res = mclient.submit("digits", heldout[1], variant="fp32", no_cache=True).wait(timeout=30)
    np.testing.assert_allclose(res.outputs["probs"], expected[1], atol=1e-5)


@pytest.mark.parametrize("kind", sorted(CATALOG))
def test_bad_message_fails_alone_in_its_batch_and_the_worker_keeps_serving(
    kind: str, digits_worker, mclient: Client, broker, heldout, expected, tmp_path: Path
) -> None:
    case = CATALOG[kind]
    marker, bad_id = tmp_path / "code-ran", "bad-" + uuid.uuid4().hex
    logged_before = digits_worker.log_text().count(case.logged) if case.logged else 0
    good_ids = push_between_good_jobs(broker, heldout, case.make(heldout[0], marker, bad_id))
    siblings = [f"{bad_id}-ok"] if "bulk" in kind else []
    watched = good_ids + siblings + ([bad_id] if case.error else [])
    metas = mclient.listener.wait(watched, timeout=30)

    if case.error is not None:
        cls, match = case.error
        with pytest.raises(cls, match=match) as err:
            metas[bad_id][0].to_result(cached=False)
        assert err.type is cls
    else:
        assert case.logged is not None
        assert digits_worker.log_text().count(case.logged) == logged_before + 1
    assert_succeeded(mclient, metas, good_ids, expected)
    for sib in siblings:
        np.testing.assert_allclose(
            metas[sib][0].to_result(cached=False).outputs["probs"], expected[0], atol=1e-5
        )
    assert not marker.exists()
    assert_worker_serves(digits_worker, mclient, heldout, expected)


def test_the_catalog_holds_at_least_25_distinct_kinds_all_listed_in_the_docstring() -> None:
    listed = __doc__.split("logged rejection):")[1].replace("(log)", "").rstrip(".\n")
    assert {k.strip() for k in listed.split(",")} == set(CATALOG)
    assert len(CATALOG) >= 25
