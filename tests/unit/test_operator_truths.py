"""Pure logic behind honest reports: a cache hit's timing and its wire form, which variants
warn as unserved, what ``result(id)`` remembers, and the eta a worker refuses."""

from __future__ import annotations

import base64
import json
import logging

import msgpack
import pytest

from ops.jobs_cmd import short_number, timing_lines
from producers.cache_hits import RecentHits
from producers.plans import JobSpec
from producers.served import ServedWarnings, explain_timeout
from tasks.errors import Timeout
from tasks.schema import Timing
from tasks.wire import StatusRecord
from workers.broker.envelope import Rejected, parse_message

COMPUTED = Timing(100.0, 100.5, 100.6, 100.7, 500.0, 100.0, 50.0, 200.0, 8)


def test_a_cache_hit_times_itself_and_keeps_the_computing_job_apart() -> None:
    hit = COMPUTED.served_from_cache(200.0, 200.002)
    assert (hit.queue_ms, hit.batch_wait_ms, hit.compute_ms, hit.processing_ms, hit.batch_size) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert hit.end_to_end_ms == pytest.approx(2.0)
    assert hit.computed == COMPUTED and COMPUTED.computed is None


def test_a_cache_hits_wire_form_round_trips_and_older_readers_skip_computed() -> None:
    hit = COMPUTED.served_from_cache(200.0, 200.002)
    doc = json.loads(json.dumps(hit.to_dict()))
    assert doc["computed_queue_ms"] == 500.0 and doc["queue_ms"] == 0.0 and "computed" not in doc
    assert Timing.from_dict(doc) == hit
    old_reader_fields = set(Timing.__dataclass_fields__) - {"computed"}
    old = Timing(**{k: v for k, v in doc.items() if k in old_reader_fields})
    assert old.queue_ms == 0.0 and old.end_to_end_ms == pytest.approx(2.0)
    assert Timing.from_dict(COMPUTED.to_dict()) == COMPUTED  # a computed result: unchanged


def test_an_unserved_variant_warns_once_until_it_is_served_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="producers")
    warn = ServedWarnings()
    for served in ({"m:fp32"}, {"m:fp32"}, {"m:fp32", "m:int8"}, set(), None):
        warn.check("m:int8", served)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # the first time, and again after it was served
    assert messages[0].startswith("no live worker serves m:int8") and "inferq.m.int8" in messages[0]
    assert "live workers serve m:fp32" in messages[0] and "no worker is running" in messages[1]


def test_a_timeout_names_only_the_unserved_variants() -> None:
    exc = Timeout("timed out after 1 s waiting for 2 of 2 job(s)")
    assert str(explain_timeout(exc, ["m:a", "m:b"], {"m:a"})).endswith(": no live worker serves m:b")
    assert explain_timeout(exc, ["m:a"], {"m:a"}) is exc
    assert explain_timeout(exc, ["m:b"], None) is exc  # heartbeats unread: say nothing new


def record(job_id: str) -> StatusRecord:
    doc = {
        "v": 1,
        "model": "m",
        "variant": "fp32",
        "version": "1",
        "outputs": {},
        "timing": COMPUTED.to_dict(),
    }
    return StatusRecord.success(job_id, doc)


def test_result_by_id_is_cached_only_for_jobs_this_client_was_answered_from_the_cache() -> None:
    hits = RecentHits(size=2)
    hits.remember_hits([JobSpec("a", cached=True, arrived=200.001), JobSpec("b")], 200.0)
    a, b = hits.result(record("a")), hits.result(record("b"))
    assert a.cached and a.timing.computed == COMPUTED and a.timing.end_to_end_ms == pytest.approx(1.0)
    assert not b.cached and b.timing == COMPUTED
    hits.forget(["a"])  # sent again to be computed
    assert not hits.result(record("a")).cached
    for jid in ("x", "y", "z"):
        hits.remember(jid, 1.0, 2.0)
    assert not hits.result(record("x")).cached and hits.result(record("z")).cached  # bounded


def test_numbers_for_people_have_four_significant_digits() -> None:
    assert [short_number(v) for v in (0.9961000084877014, 9.999999747378752e-05, 0.0, 3)] == [
        "0.9961",
        "0.0001",
        "0",
        "3",
    ]
    assert timing_lines(COMPUTED) == [
        "queue 500.0 ms, batch wait 100.0 ms, compute 50.0 ms, processing 200.0 ms, batch 8"
    ]
    hit = timing_lines(COMPUTED.served_from_cache(200.0, 200.002))
    assert hit[0] == "served from the cache: end to end 2.0 ms" and hit[1].startswith(
        "computed earlier: queue 500.0"
    )


def celery_message(headers: dict[str, object]) -> bytes:
    body = msgpack.packb([[{"model": "m", "variant": "fp32"}], {}, {}])
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-type": "application/x-msgpack",
            "headers": {"task": "inferq.predict", "id": "j1", **headers},
            "properties": {"body_encoding": "base64"},
        }
    ).encode()


def test_a_celery_eta_is_refused_under_the_jobs_id_and_none_is_accepted() -> None:
    with pytest.raises(Rejected, match="eta '2030-01-01T00:00:05") as refused:
        parse_message(celery_message({"eta": "2030-01-01T00:00:05+00:00"}))
    assert refused.value.job_id == "j1" and "countdown" in refused.value.reason
    assert parse_message(celery_message({"eta": None})) == [("j1", {"model": "m", "variant": "fp32"})]


class SharedCounts:
    """The producers' ``inferq:cache_stats`` hash, as two workers' collectors see it."""

    def __init__(self) -> None:
        self.hash: dict[bytes, bytes] = {}

    def pipeline(self, transaction: bool = True) -> SharedCounts.Pipe:
        assert transaction, "the read and the clear must be one step"
        return SharedCounts.Pipe(self)

    class Pipe:
        def __init__(self, shared: SharedCounts) -> None:
            self.shared = shared

        def hgetall(self, key: str) -> None:
            pass

        def delete(self, key: str) -> None:
            pass

        def execute(self) -> list[object]:
            taken, self.shared.hash = self.shared.hash, {}
            return [taken, 1]


def test_each_cache_hit_is_exported_by_one_worker_only() -> None:
    from workers.serving.metrics import _CacheCollector

    shared = SharedCounts()
    workers = [_CacheCollector(shared), _CacheCollector(shared)]

    def exported(kind: str) -> float:
        total = 0.0
        for w in workers:
            for family in w.collect():
                if family.name == f"inferq_cache_{kind}":
                    total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return total

    shared.hash = {b"m:fp32:hit": b"3", b"m:fp32:miss": b"1"}
    assert (exported("hits"), exported("misses")) == (3, 1)
    shared.hash = {b"m:fp32:hit": b"2"}
    assert (exported("hits"), exported("misses")) == (5, 1)  # cumulative, never doubled


def test_an_expired_job_is_labelled_expired() -> None:
    from tasks.errors import BadInput, Expired
    from workers.serving.metrics import end_status
    from workers.serving.store import Outcome

    assert end_status(Outcome("j", error=Expired("late"))) == "expired"
    assert end_status(Outcome("j", error=BadInput("bad"))) == "failure"
