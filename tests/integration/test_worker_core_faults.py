"""The job path when Redis refuses a write: nothing acked unstored, nothing stuck, nothing leaked.

Real redis-server, real fetcher, leases and ``WorkerCore``; the model is a stand-in
(this is about message bookkeeping) and the result writer fails on demand the way
Redis does when it is out of memory or cannot persist (``OOM``, ``MISCONF``).
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis

from ops.local.redis_server import LocalRedis
from tasks.app import create_app
from tasks.constants import PREDICT_TASK
from tasks.errors import BadInput
from tasks.kombu_layout import UNACKED
from tasks.wire import Request
from workers.broker.fetcher import Fetcher
from workers.broker.leases import Leases
from workers.serving.consumer import WorkerCore
from workers.serving.events import EventSink
from workers.serving.metrics import Metrics
from workers.serving.pipeline import Block, Computed
from workers.serving.store import Outcome

pytestmark = pytest.mark.integration

QUEUE = "inferq.m.v"
_INFO = types.SimpleNamespace(
    key="m:v", name="m", variant="v", version="1", max_batch_size=4, max_wait_ms=1.0
)
_RUNTIME = types.SimpleNamespace(info=_INFO)


class StandInPipeline:
    """Jobs whose input is ``b"bad"`` fail validation; the rest 'compute' at once."""

    runtimes = {"m:v": _RUNTIME}
    max_payload_bytes = 1 << 20

    def prepare(self, job_id: str, raw: dict[str, Any], received_at: float) -> Any:
        if raw.get("inputs") == b"bad":
            raise BadInput("expected a good input, got b'bad'")
        block = Block([job_id], Request("m", "v"), {"x": np.zeros((1, 1), np.float32)}, _RUNTIME, received_at)  # type: ignore[arg-type]
        return types.SimpleNamespace(as_block=lambda: block)

    def compute(self, blocks: list[Block]) -> Computed:
        rows = sum(b.rows for b in blocks)
        return Computed(blocks, {"y": np.zeros((rows, 1), np.float32)}, time.time(), time.time())


class RefusingWriter:
    """Stores outcomes in a list; refuses (``redis.ResponseError``) while ``refuse(outcomes)``."""

    def __init__(self, refuse: Callable[[list[Outcome]], bool]) -> None:
        self.refuse = refuse
        self.stored: dict[str, str] = {}
        self.refused = 0

    def started(self, ids: list[str]) -> None:
        pass

    def cancelled(self, ids: list[str]) -> set[str]:
        return set()

    def store(self, outcomes: list[Outcome]) -> None:
        outcomes = list(outcomes)
        if self.refuse(outcomes):
            self.refused += 1
            time.sleep(0.2)  # let the good half of a bulk message finish first
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        self.stored.update({o.job_id: o.record().state for o in outcomes})

    def store_encoded(
        self, ids: list[str], records: list[bytes], replies: object = None, columns: object = None
    ) -> None:
        self.store([Outcome(jid, result={"ok": 1}) for jid in ids])


@pytest.fixture()
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as s:
        yield s


def run_core(
    server: LocalRedis, writer: RefusingWriter, bodies: list[dict[str, Any]], until: Callable[[], bool]
):
    client = redis.Redis.from_url(server.url)
    app = create_app(server.client_settings())
    leases = Leases(client, visibility_timeout_s=1.0)
    core = WorkerCore(
        StandInPipeline(),  # type: ignore[arg-type]
        writer,  # type: ignore[arg-type]
        lambda deliver: Fetcher(client, [QUEUE], deliver, capacity=8, leases=leases),
        EventSink(app, "test", enabled=False),
        metrics=Metrics(None),
        give_up_s=0.5,
    )
    core.start()
    try:
        for i, body in enumerate(bodies):
            app.send_task(PREDICT_TASK, args=[body], task_id=f"msg-{i}", queue=QUEUE)
        deadline = time.monotonic() + 20
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let the last ack land
        return core.fetcher, client
    finally:
        core.shutdown()


def test_a_bulk_message_is_not_acked_until_its_early_failures_are_stored(server: LocalRedis) -> None:
    # The bad item's failure is refused twice; meanwhile the good item is stored. The
    # message must not be acked on the good item's account: it comes back, and the
    # bad item gets its answer on a later delivery.
    writer = RefusingWriter(lambda outs: any(o.error for o in outs) and writer.refused < 2)
    bulk = {
        "model": "m",
        "variant": "v",
        "items": [{"id": "good", "inputs": b"x"}, {"id": "bad", "inputs": b"bad"}],
    }
    fetcher, client = run_core(server, writer, [bulk], until=lambda: "bad" in writer.stored)
    assert writer.refused == 2
    assert writer.stored == {"good": "SUCCESS", "bad": "FAILURE"}
    assert client.hlen(UNACKED) == 0 and client.llen(QUEUE) == 0
    assert fetcher._in_flight == 0, "a message was released more or less than once"


def test_a_batch_whose_store_is_refused_is_given_up_and_done_on_redelivery(server: LocalRedis) -> None:
    writer = RefusingWriter(lambda outs: writer.refused < 3)
    jobs = [{"model": "m", "variant": "v", "inputs": b"x"} for _ in range(5)]
    fetcher, client = run_core(server, writer, jobs, until=lambda: len(writer.stored) == 5)
    assert writer.refused == 3
    assert sorted(writer.stored) == [f"msg-{i}" for i in range(5)]
    assert client.hlen(UNACKED) == 0 and client.llen(QUEUE) == 0
    assert fetcher._in_flight == 0, "a message was released more or less than once"
