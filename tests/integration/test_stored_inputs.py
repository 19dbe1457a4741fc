"""``StoredInputs`` reads inputs kept beside their messages on a real redis-server: a
value within its limit is read, one over it is only measured, and a missing key or one
of another type reads as missing (the job then fails with BadInput, naming why)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks.constants import INPUT_KEY_PREFIX
from tasks.settings import Settings
from workers.broker.stored_inputs import StoredInputs, Unusable

pytestmark = pytest.mark.integration


@pytest.fixture
def r(settings: Settings) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.broker_url)
    yield client
    client.close()


def key() -> str:
    return f"{INPUT_KEY_PREFIX}{uuid.uuid4().hex}"


def test_values_within_the_limit_are_read_and_one_over_it_is_only_measured(r: redis.Redis[bytes]) -> None:
    small, exact, big = key(), key(), key()
    r.set(small, b"x" * 10, ex=60)
    r.set(exact, b"y" * 100, ex=60)
    r.set(big, b"z" * 101, ex=60)
    assert StoredInputs(r, max_bytes=100).read([small, exact, big], [100, 100, 100]) == [
        b"x" * 10,
        b"y" * 100,
        101,
    ]


def test_a_missing_key_or_one_of_another_type_reads_as_missing(r: redis.Redis[bytes]) -> None:
    missing, a_hash, good = key(), key(), key()
    r.hset(a_hash, "f", "v")
    r.expire(a_hash, 60)
    r.set(good, b"ok", ex=60)
    assert StoredInputs(r, max_bytes=100).read([missing, a_hash, good], [100] * 3) == [None, None, b"ok"]


def test_fill_marks_a_job_whose_stored_input_is_gone_unusable_naming_why(r: redis.Redis[bytes]) -> None:
    gone, there = key(), key()
    r.set(there, b"payload", ex=60)
    requests: list[dict[str, Any]] = [{"inputs_ref": gone}, {"inputs_ref": there}]
    StoredInputs(r, max_bytes=100).fill(requests)
    first = requests[0]["inputs"]
    assert isinstance(first, Unusable) and "was not found beside its message" in str(first.error)
    assert requests[1]["inputs"] == b"payload"
