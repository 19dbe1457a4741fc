"""Every bad-input kind ends as a clear FAILURE; the worker stays up; the next job succeeds.

Also: no pickle is ever deserialized (jobs or results), and input values never reach
the worker's log or a stored error. (tests/integration/test_bad_input_catalog.py sends
each kind among good jobs in one round trip.)
"""

from __future__ import annotations

import json
import pickle
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest

from producers.client import Client
from tasks.constants import PREDICT_TASK
from tasks.errors import BadInput, JobNotFound, ModelNotFound, PayloadTooLarge
from tasks.keys import queue_name, result_key
from tests.helpers.raw_messages import (
    JSON,
    PICKLE,
    QUEUE,
    YAML,
    RunsCode,
    job_message,
    kombu_message,
    request,
)

pytestmark = pytest.mark.integration


def good_input(models_dir: Path) -> np.ndarray:
    return np.load(models_dir / "digits" / "data" / "heldout_x.npy")[0]


def send_raw(client: Client, request: object, variant: str = "fp32") -> str:
    """Put a job on a worker's queue the way any Celery client could, skipping our checks."""
    jid = "raw-" + uuid.uuid4().hex
    client.app.send_task(PREDICT_TASK, args=[request], task_id=jid, queue=queue_name("digits", variant))
    return jid


def expect_failure(client: Client, jid: str, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        client.result(jid, wait=True, timeout=30)
    assert client.status(jid).value == "failure"


def then_a_good_job_succeeds(client: Client, digits_worker, models_dir: Path) -> None:
    assert digits_worker.alive, digits_worker.log_text()[-3000:]
    res = client.submit("digits", good_input(models_dir), variant="fp32", no_cache=True).wait(timeout=30)
    assert res.outputs["probs"].shape == (10,)


BAD_ARRAYS = {
    "wrong_shape": (np.zeros((28, 28), np.float32), r"expected shape \[28, 28, 1\], got \[28, 28\]"),
    "extra_batch_axis": (np.zeros((1, 28, 28, 1), np.float32), r"without the batch axis"),
    "wrong_dtype": (np.zeros((28, 28, 1), np.float64), r"expected dtype float32, got float64"),
    "nan": (np.full((28, 28, 1), np.nan, np.float32), r"expected finite values, got 784 NaN"),
    "inf": (np.full((28, 28, 1), np.inf, np.float32), r"got 0 NaN and 784 inf"),
    "empty": (np.zeros((0, 28, 1), np.float32), r"empty array|positive integer, got shape \[0, 28, 1\]"),
}


#: What the client refuses itself: float64 zeros are cast to float32 (nothing lost), a
#: float64 beyond float32's range is not.
REFUSED_BY_CLIENT = {
    **BAD_ARRAYS,
    "wrong_dtype": (
        np.full((28, 28, 1), 1e39, np.float64),
        r"expected dtype float32, got float64 with values outside float32's range",
    ),
    "not_a_number_dtype": (np.full((28, 28, 1), True), r"expected dtype float32, got bool"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED_BY_CLIENT))
def test_bad_array_is_refused_by_the_client_before_sending(kind: str, client: Client) -> None:
    arr, match = REFUSED_BY_CLIENT[kind]
    with pytest.raises(BadInput, match=match):
        client.submit("digits", arr, variant="fp32")


@pytest.mark.parametrize("kind", sorted(BAD_ARRAYS))
def test_bad_array_sent_anyway_fails_on_the_worker_with_a_clear_message(
    kind: str, digits_worker, client: Client, models_dir: Path
) -> None:
    arr, match = BAD_ARRAYS[kind]
    job = client.submit("digits", arr, variant="fp32", validate=False)
    with pytest.raises(BadInput, match=match):
        job.wait(timeout=30)
    assert client.status(job.id).value == "failure"
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_json_numbers_are_cast_to_a_float32_models_dtype(
    digits_worker, client: Client, models_dir: Path
) -> None:
    """A web backend's JSON arrives as float64 (or int) nested lists: accepted, cast, and the
    same cache entry as the float32 array."""
    x = good_input(models_dir)
    as_json = json.loads(json.dumps(x.astype(np.float64).tolist()))
    first = client.submit("digits", as_json, variant="fp32")
    assert np.asarray(as_json).dtype == np.float64
    res = first.wait(timeout=30)
    assert res.outputs["probs"].shape == (10,)
    again = client.submit("digits", x.astype(np.float32), variant="fp32")
    assert again.id == first.id and again.cached


def test_bad_input_failure_is_cached_like_a_result(digits_worker, client: Client) -> None:
    arr = np.full((28, 28, 1), np.nan, np.float32)
    arr[0, 0, 0] = time.time() % 1  # unique
    first = client.submit("digits", arr, variant="fp32", validate=False)
    with pytest.raises(BadInput):
        first.wait(timeout=30)
    again = client.submit("digits", arr, variant="fp32", validate=False)
    assert again.cached and not again.enqueued
    with pytest.raises(BadInput, match="finite"):
        again.wait(timeout=1)


def test_unknown_model_is_refused_naming_the_known_ones(
    digits_worker, client: Client, models_dir: Path
) -> None:
    with pytest.raises(ModelNotFound, match=r"unknown model 'nosuch'.*known models: \[.*'digits'.*\]"):
        client.submit("nosuch", good_input(models_dir))


def test_unknown_variant_is_refused_naming_the_variants(
    digits_worker, client: Client, models_dir: Path
) -> None:
    with pytest.raises(
        ModelNotFound, match=r"no variant 'int4'; it has \['fp16', 'fp32', 'int8', 'savedmodel'\]"
    ):
        client.submit("digits", good_input(models_dir), variant="int4")


def test_job_for_a_variant_the_worker_does_not_serve_fails_on_the_worker(
    digits_worker, client: Client, models_dir: Path
) -> None:
    payload = msgpack.packb(
        {"image": {"dtype": "<f4", "shape": [28, 28, 1], "data": good_input(models_dir).tobytes()}}
    )
    jid = send_raw(client, request(payload, variant="int4"))
    expect_failure(client, jid, ModelNotFound, r"does not serve digits:int4")
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_job_for_another_model_version_fails_on_the_worker(
    digits_worker, client: Client, models_dir: Path
) -> None:
    payload = msgpack.packb(
        {"image": {"dtype": "<f4", "shape": [28, 28, 1], "data": good_input(models_dir).tobytes()}}
    )
    jid = send_raw(client, request(payload, version="not-this-one"))
    expect_failure(client, jid, ModelNotFound, r"asks for version not-this-one")


def test_payload_over_the_limit_is_refused_by_client_and_worker(
    digits_worker, client: Client, settings, models_dir: Path
) -> None:
    big = np.zeros((settings.max_payload_bytes // 4 + 10,), np.float32)
    with pytest.raises(PayloadTooLarge, match="over the limit of 16777216 bytes"):
        client.submit("digits", {"image": big}, variant="fp32", validate=False)
    jid = send_raw(client, request(b"\x00" * (settings.max_payload_bytes + 1)))
    expect_failure(client, jid, PayloadTooLarge, r"16777217 bytes, over the limit of 16777216")
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_bytes_that_do_not_decode_fail_clearly(digits_worker, client: Client, models_dir: Path) -> None:
    jid = send_raw(client, request(b"\xc1\xc1 definitely not msgpack"))
    expect_failure(client, jid, BadInput, r"not valid msgpack")
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_byte_count_not_matching_declared_shape_fails_clearly(
    digits_worker, client: Client, models_dir: Path
) -> None:
    payload = msgpack.packb({"image": {"dtype": "<f4", "shape": [28, 28, 1], "data": b"\x00" * 100}})
    jid = send_raw(client, request(payload))
    expect_failure(client, jid, BadInput, r"needs 3136 bytes, got 100 bytes")
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_job_argument_of_the_wrong_form_fails_clearly(
    digits_worker, client: Client, models_dir: Path
) -> None:
    jid = send_raw(client, ["not", "a", "map"])
    expect_failure(client, jid, BadInput, r"job argument must be a map")
    jid = send_raw(client, {"model": "digits"})
    expect_failure(client, jid, BadInput, r"missing field\(s\) \['variant', 'inputs'\]")
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_json_producer_with_nested_lists_gets_a_result(
    digits_worker, client: Client, models_dir: Path
) -> None:
    x = good_input(models_dir)
    jid = send_raw(client, request({"image": x.tolist()}))
    res = client.result(jid, wait=True, timeout=30)
    direct = client.submit("digits", x, variant="fp32").wait(timeout=30)
    np.testing.assert_allclose(res.outputs["probs"], direct.outputs["probs"], rtol=1e-6)


# --- pickle is never deserialized; input values are never logged ----------------------------


def test_the_pickle_these_tests_send_would_run_code_if_it_were_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsCode(f"touch {marker}")))  # what the worker must never do
    assert marker.exists()


def test_a_pickled_result_document_is_never_unpickled_by_producers(client: Client, tmp_path: Path) -> None:
    marker, jid = tmp_path / "ran", "pickled-" + uuid.uuid4().hex
    assert not {"pickle", PICKLE, "yaml", YAML} & {*client.app.conf.accept_content}
    assert client.app.conf.result_accept_content == ["json"]
    client.backend.set(result_key(jid), pickle.dumps(RunsCode(f"touch {marker}")), ex=60)
    with pytest.raises(JobNotFound, match="is unknown"):
        client.result(jid)
    assert client.status(jid).value == "unknown"
    with pytest.raises(Exception, match="can't decode"):  # plain Celery: JSON only, too
        client.app.AsyncResult(jid).get(timeout=1)
    assert not marker.exists()


SECRET = "SECRET-INPUT-8c1f"


def test_input_values_never_reach_the_worker_log_or_stored_errors(
    digits_worker, client: Client, models_dir: Path
) -> None:
    image = good_input(models_dir).copy()
    image[0, 0, 0] = 1234.5678
    bad = {
        "string_list": job_message(
            request({"image": [[0.5, SECRET]]}), job_id="s1-" + uuid.uuid4().hex, ctype=JSON
        ),
        "string_value": job_message(request({"image": SECRET}), job_id="s2-" + uuid.uuid4().hex, ctype=JSON),
        "string_data": job_message(
            request({"image": {"dtype": "<f4", "shape": [1], "data": SECRET}}),
            job_id="s3-" + uuid.uuid4().hex,
        ),
        "shape": job_message(
            request({"image": {"dtype": "<f4", "shape": [28, SECRET], "b64": ""}}),
            job_id="s4-" + uuid.uuid4().hex,
            ctype=JSON,
        ),
        "big_ints": job_message(
            request({"image": [98765432101]}), job_id="s5-" + uuid.uuid4().hex, ctype=JSON
        ),
        "content_type": kombu_message(SECRET.encode(), "text/plain", job_id="s6-" + uuid.uuid4().hex),
        "pickle": kombu_message(pickle.dumps(SECRET), PICKLE, job_id="s7-" + uuid.uuid4().hex),
    }
    answered = [json.loads(m)["headers"]["id"] for m in bad.values()]
    good = "g-" + uuid.uuid4().hex
    client.broker.lpush(
        QUEUE,
        *bad.values(),
        f'{{"not": "celery", "secret": "{SECRET}"}}'.encode(),
        f"{SECRET} not even JSON".encode(),
        job_message(request({"image": image.tolist()}), job_id=good, ctype=JSON),
    )
    metas = client.listener.wait([*answered, good], timeout=30)
    assert metas[good][0].to_result(cached=False).outputs["probs"].shape == (10,)
    stored = [client.backend.get(result_key(j)) or b"" for j in answered]
    assert all(b'"FAILURE"' in doc for doc in stored)
    for needle in (SECRET, "1234.567", "98765432101"):
        assert needle not in digits_worker.log_text()
        assert not any(needle.encode() in doc for doc in stored)
