"""The producer's cache check and in-flight claims, against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from ops.local.redis_server import LocalRedis
from producers.claims import CLAIMED, FOUND, SHARED, Claims
from tasks.keys import inflight_key, result_key
from tasks.wire import Claim

pytestmark = pytest.mark.integration

TRANSIENT = b'{"status": "FAILURE", "result": {"exc_type": "TransientError", "exc_message": ["x"]}}'
SUCCESS = b'{"status": "SUCCESS", "result": {}}'


@pytest.fixture()
def r() -> Iterator[redis.Redis]:
    with LocalRedis() as server:
        yield redis.Redis.from_url(server.url)


def test_an_id_is_claimed_once_then_shared_then_found(r: redis.Redis) -> None:
    claims = Claims(r, inflight_ttl_s=60, stale_after_s=60)
    assert claims.check_and_claim(["a"], "m:v") == [[CLAIMED]]
    assert claims.check_and_claim(["a"], "m:v") == [[SHARED]]
    r.set(result_key("a"), SUCCESS)
    assert claims.check_and_claim(["a"], "m:v") == [[FOUND, SUCCESS]]


def test_one_call_answers_every_kind_in_the_order_of_the_ids(r: redis.Redis) -> None:
    """Found, claimed, shared and a stale claim taken over, interleaved in one chunk: the
    script's string of codes and its records line up with the ids they answer."""
    claims = Claims(r, inflight_ttl_s=60, stale_after_s=10)
    sec, _ = r.time()
    r.set(result_key("hit-1"), SUCCESS)
    r.set(result_key("hit-2"), TRANSIENT)
    r.set(inflight_key("held"), Claim.encode(sec - 1))
    r.set(inflight_key("stale"), Claim.encode(sec - 30))  # older than stale_after_s, nothing queued
    ids = ["new-1", "hit-1", "held", "stale", "new-2", "hit-2"]
    assert claims.check_and_claim(ids, "m:v") == [
        [CLAIMED],
        [FOUND, SUCCESS],
        [SHARED],
        [CLAIMED],
        [CLAIMED],
        [FOUND, TRANSIENT],
    ]
    assert claims.check_and_claim([], "m:v") == []


def test_a_failure_of_the_moment_is_reclaimed_and_forgotten(r: redis.Redis) -> None:
    r.set(result_key("a"), TRANSIENT)
    assert Claims(r, inflight_ttl_s=60, stale_after_s=60).reclaim([("a", TRANSIENT)], "m:v") == [True]
    assert r.get(result_key("a")) is None, "a waiter would read the old failure as the new run's"
    assert r.exists(inflight_key("a"))


def test_a_result_stored_since_the_failure_was_read_is_kept_and_not_reclaimed(r: redis.Redis) -> None:
    r.set(result_key("a"), SUCCESS)  # another producer's redo finished in between
    assert Claims(r, inflight_ttl_s=60, stale_after_s=60).reclaim([("a", TRANSIENT)], "m:v") == [False]
    assert r.get(result_key("a")) == SUCCESS


def test_a_failure_gone_since_it_was_read_is_claimed_once(r: redis.Redis) -> None:
    claims = Claims(r, inflight_ttl_s=60, stale_after_s=60)
    assert claims.reclaim([("a", TRANSIENT)], "m:v") == [True]
    assert claims.reclaim([("a", TRANSIENT)], "m:v") == [False]  # now in flight
