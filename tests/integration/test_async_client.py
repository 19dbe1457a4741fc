"""The asyncio client against a real Redis and a real worker: the sync client's contract,
awaited, with the event loop never blocked.

One ``AsyncClient`` per event loop: each test runs its own loop (``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import redis

from ops.local.redis_server import LocalRedis
from producers import AsyncClient, AsyncJob, Client
from producers.async_listener import AsyncResultListener
from tasks import constants as C
from tasks.connections import async_redis_client
from tasks.errors import (
    BadInput,
    BrokerUnavailable,
    ConfigError,
    JobNotFound,
    ModelNotFound,
    NotReady,
    Timeout,
    TransientError,
)
from tasks.keys import queue_name, result_key
from tasks.kombu_layout import queue_lists
from tasks.schema import CancelOutcome, JobStatus, ModelInfo, Timing
from tasks.settings import Settings
from tasks.wire import Result, StatusRecord
from tests.conftest import WorkerProcess, on_db
from tests.helpers.announced import announce, tiny_model
from tests.helpers.loop_lag import LoopMonitor

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(on_db(settings, 9), ["digits:fp32"], tmp_path_factory.mktemp("async") / "worker.log")
    with Client(w.settings) as c:
        w.wait_ready(c)
    yield w
    w.stop()


@pytest.fixture()
def worker_settings(worker: WorkerProcess) -> Settings:
    return worker.settings


def test_a_thousand_concurrent_jobs_complete_without_stalling_the_loop(worker: WorkerProcess) -> None:
    """1000 requests arrive one per turn of the loop (as a server's do) while the worker is
    paused, so all 1000 are in flight at once; then the worker answers them in a burst.
    No loop step of the client's may use more than 5 ms of CPU (``LoopMonitor``: the
    ticker's wall-clock lag on this shared 2-core VM is reported, not asserted)."""
    inputs = [digit(10_000 + i) for i in range(1000)]  # made before timing: not the client's work

    async def main() -> tuple[int, int, LoopMonitor, float]:
        async with AsyncClient(worker.settings) as client:
            await client.model_info("digits")  # the catalogue read once, before timing
            # One job end to end first: connections opened, scripts loaded, lazy imports
            # done (start-up costs, not the loop's steady state).
            await (await client.submit("digits", digit(9_999), no_cache=True)).wait(timeout=60)
            in_flight = 0
            most = 0

            async def one(x: np.ndarray) -> Any:
                nonlocal in_flight, most
                job = await client.submit("digits", x, no_cache=True)
                in_flight += 1
                most = max(most, in_flight)
                try:
                    return await job.wait(timeout=120)
                finally:
                    in_flight -= 1

            with LoopMonitor() as lag:
                t0 = time.perf_counter()
                os.kill(worker.proc.pid, signal.SIGSTOP)
                try:
                    tasks = []
                    for x in inputs:
                        tasks.append(asyncio.create_task(one(x)))
                        await asyncio.sleep(0)
                    while most < len(inputs) and time.perf_counter() - t0 < 60:
                        await asyncio.sleep(0.01)
                finally:
                    os.kill(worker.proc.pid, signal.SIGCONT)
                results = await asyncio.gather(*tasks)
                elapsed = time.perf_counter() - t0
            return sum(r.outputs["probs"].shape == (10,) for r in results), most, lag, elapsed

    done, most, lag, elapsed = run(main)
    print(f"1000 jobs in {elapsed:.2f} s, {most} in flight at once; {lag.report()}")
    assert done == 1000
    assert most == 1000
    assert lag.worst_step_ms <= 5.0, f"one loop step used {lag.worst_step_ms:.1f} ms: {lag.worst_step}"


def test_async_and_sync_clients_agree_on_results_cache_and_statuses(worker_settings: Settings) -> None:
    x = digit(1)

    async def main() -> None:
        async with AsyncClient(worker_settings) as client:
            job = await client.submit("digits", x)
            assert isinstance(job, AsyncJob) and not job.cached
            first = await job.wait(timeout=30)
            assert await client.status(job.id) is JobStatus.SUCCESS
            again = await client.submit("digits", x)
            assert again.cached and again.done and again.id == job.id
            stored = await client.result(job.id)
            np.testing.assert_array_equal(stored.outputs["probs"], first.outputs["probs"])
            with Client(worker_settings) as sync:
                hit = sync.submit("digits", x)
                assert hit.cached
                np.testing.assert_array_equal(hit.wait(5).outputs["probs"], first.outputs["probs"])
            both = await client.wait_all([job, await client.submit("digits", digit(2))], timeout=30)
            assert [type(r).__name__ for r in both] == ["Result", "Result"]

    run(main)


def test_async_client_raises_the_same_errors(worker_settings: Settings) -> None:
    async def main() -> None:
        async with AsyncClient(worker_settings) as client:
            with pytest.raises(BadInput, match=r"expected shape \[28, 28, 1\], got \[3\]"):
                await client.submit("digits", np.zeros(3, np.float32))
            with pytest.raises(BadInput, match="float32"):
                await client.submit("digits", np.full((28, 28, 1), 1e300))
            with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
                await client.submit("nope", np.zeros(3))
            with pytest.raises(JobNotFound):
                await client.result("0" * 64)
            assert await client.status("0" * 64) is JobStatus.UNKNOWN
            with pytest.raises(BadInput, match="job id"):
                await client.status("not a valid id!")

    run(main)


def test_handles_resolve_only_for_their_owner(worker_settings: Settings) -> None:
    async def main() -> None:
        async with AsyncClient(worker_settings) as client:
            job = await client.submit("digits", digit(3))
            mine = await client.handle(job, owner="alice")
            assert mine.startswith("h-") and job.id not in mine
            assert await client.resolve(mine, owner="alice") == job.id
            with pytest.raises(JobNotFound):
                await client.resolve(mine, owner="mallory")
            with pytest.raises(JobNotFound):
                await client.resolve(mine)  # an owned handle needs its owner
            public = await client.handle(job)
            assert await client.status(public) in {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCESS}
            await job.wait(timeout=30)
            assert (await client.result(public)).job_id == job.id

    run(main)


def test_a_cancelled_queued_job_is_never_computed(settings: Settings) -> None:
    """No worker on this database: the job stays queued until cancelled."""
    s = on_db(settings, 10)
    announce(redis.Redis.from_url(s.result_backend), tiny_model("idle"))

    async def main() -> None:
        async with AsyncClient(s) as client:
            job = await client.submit("idle", np.ones(4, np.float32))
            assert await job.status() is JobStatus.QUEUED
            with pytest.raises(NotReady):
                await client.result(job.id)
            assert await job.cancel() is CancelOutcome.CANCELLED
            assert await client.status(job.id) is JobStatus.CANCELLED

    run(main)


def test_async_client_makes_no_blocking_redis_or_kombu_call(
    worker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sync redis-py command and every kombu publish raises while the async client works."""
    import kombu.messaging

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a blocking call on the event loop")

    async def main() -> None:
        async with AsyncClient(worker_settings) as client:
            monkeypatch.setattr(redis.Redis, "execute_command", refuse)
            monkeypatch.setattr(redis.client.Pipeline, "execute", refuse)
            monkeypatch.setattr(kombu.messaging.Producer, "publish", refuse)
            job = await client.submit("digits", digit(4), no_cache=True)
            await job.wait(timeout=30)
            await client.status(job.id)
            await client.health()
            await client.cancel(job.id)

    run(main)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LocalRedis]:
    s = LocalRedis(workdir=tmp_path / "redis").start()
    yield s
    if s.proc is not None:
        os.kill(s.proc.pid, signal.SIGCONT)
    s.stop()


def test_a_hung_redis_gives_broker_unavailable_within_the_bound_and_the_loop_keeps_running(
    server: LocalRedis, tmp_path: Path
) -> None:
    s = Settings(broker_url=server.url, models_dir=tmp_path, client_timeout_s=1.0)
    info = tiny_model("hung")
    announce(redis.Redis.from_url(server.url), info)

    async def main() -> None:
        async with AsyncClient(s) as client:
            await client.ping()
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                with LoopMonitor() as lag:
                    t = time.monotonic()
                    with pytest.raises(BrokerUnavailable, match="did not answer within"):
                        await client.submit("hung", np.ones(4, np.float32))
                    took = time.monotonic() - t
                    h = await client.health(timeout=0.5)
                assert took < 1.5, took
                assert h["ready"] is False and h["broker"] is False
                assert lag.lag_ms, "the loop ran on while Redis hung"
                assert lag.worst_step_ms <= 5.0, lag.report()
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            await client.ping()  # the same client works again

    run(main)


def test_a_job_waited_through_a_redis_restart_still_completes(server: LocalRedis, tmp_path: Path) -> None:
    """The listener reconnects by itself and reads results stored while it was away."""
    s = Settings(broker_url=server.url, models_dir=tmp_path, client_timeout_s=2.0)
    info = tiny_model("restart")
    announce(redis.Redis.from_url(server.url), info)

    async def main() -> None:
        async with AsyncClient(s) as client:
            job = await client.submit("restart", np.ones(4, np.float32))
            waiting = asyncio.ensure_future(job.wait(timeout=30))
            await asyncio.sleep(0.2)
            server.stop()
            with pytest.raises(BrokerUnavailable):
                await client.status(job.id)
            server.start()
            await asyncio.sleep(0.5)
            # a worker (here: the test) stores and publishes the result while the listener
            # is reconnecting, or after
            now = time.time()
            timing = Timing.build(
                enqueued_at=now,
                received_at=now,
                started_at=now,
                compute_done_at=now,
                finished_at=now,
                batch_size=1,
            )
            result = Result(job.id, "restart", "fp32", info.version, {"y": np.ones(4, np.float32)}, timing)
            record = StatusRecord.success(job.id, result.to_wire()).encode()
            r = redis.Redis.from_url(server.url)
            r.set(result_key(job.id), record)
            r.publish(result_key(job.id), record)
            got = await waiting
            assert got.outputs["y"].tolist() == [1.0] * 4

    run(main)


def test_a_submit_cancelled_at_any_await_leaves_no_claim_without_its_message(
    server: LocalRedis, tmp_path: Path
) -> None:
    """A caller cancelled mid-submit (a request timeout, aiohttp's handler on a client's
    disconnect) must not leave an input claimed with no message sent: every later submit of
    that input would share a job nobody runs, until the claim went stale. Each submit here
    is cancelled after one more turn of the loop than the last, so the cancellation lands
    at each of its awaits in turn. No worker: whatever was sent stays queued, to be counted."""
    s = Settings(broker_url=server.url, models_dir=tmp_path)
    info = announce(redis.Redis.from_url(server.url), tiny_model("cancelled"))

    async def main() -> None:
        async with AsyncClient(s) as client:
            await client.submit("cancelled", np.zeros(4, np.float32))  # connections and scripts ready
            for turns in range(1, 80):
                t = asyncio.ensure_future(client.submit("cancelled", np.full(4, turns, np.float32)))
                for _ in range(turns):
                    await asyncio.sleep(0)
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await asyncio.sleep(0.5)  # anything still finishing a submission ends

    run(main)
    r = redis.Redis.from_url(server.url)
    claimed = {
        k.decode().removeprefix(C.INFLIGHT_KEY_PREFIX) for k in r.scan_iter(f"{C.INFLIGHT_KEY_PREFIX}*")
    }
    queued = {
        json.loads(m)["headers"]["id"]
        for lst in queue_lists(queue_name(info.name, info.variant))
        for m in r.lrange(lst, 0, -1)
    }
    assert len(claimed) > 1, "no submission got as far as its claim: the test cancelled too early"
    assert claimed <= queued, f"{len(claimed - queued)} of {len(claimed)} claims have no message"


def store_result(url: str, job_id: str, info: ModelInfo) -> None:
    """Store and publish a job's result as a worker would (no worker runs in these tests)."""
    now = time.time()
    timing = Timing.build(
        enqueued_at=now, received_at=now, started_at=now, compute_done_at=now, finished_at=now, batch_size=1
    )
    result = Result(job_id, info.name, info.variant, info.version, {"y": np.ones(2, np.float32)}, timing)
    record = StatusRecord.success(job_id, result.to_wire()).encode()
    r = redis.Redis.from_url(url)
    r.set(result_key(job_id), record)
    r.publish(result_key(job_id), record)


def test_a_wait_cancelled_while_it_subscribes_leaves_later_waits_able_to_hear(
    server: LocalRedis, tmp_path: Path
) -> None:
    """A caller cancelled inside the listener's watch (waiting for the subscription lock, or
    mid-send) had already registered the job: later waits found it registered, subscribed
    nothing, and slept to their timeout however long ago the result came."""
    s = Settings(broker_url=server.url, models_dir=tmp_path)
    info = announce(redis.Redis.from_url(server.url), tiny_model("deaf"))

    async def main() -> None:
        async with AsyncClient(s) as submitter, AsyncClient(s) as poller:
            job = await submitter.submit("deaf", np.ones(4, np.float32))
            await poller.submit("deaf", np.full(4, 2.0, np.float32))  # its listener is up and subscribed
            await asyncio.sleep(0.2)
            # A busy listener holds this lock while it subscribes other jobs' channels.
            async with poller.listener._lock:
                waiting = asyncio.ensure_future(poller.result(job.id, wait=True, timeout=30))
                await asyncio.sleep(0.05)
                waiting.cancel()  # the HTTP client hung up
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            store_result(server.url, job.id, info)
            got = await poller.result(job.id, wait=True, timeout=5)
            assert got.outputs["y"].tolist() == [1.0, 1.0]

    run(main)


def test_a_listener_refused_by_redis_raises_inferqs_error_and_hears_again_once_allowed(
    server: LocalRedis, tmp_path: Path
) -> None:
    """An ACL user without pub/sub channels (Redis 7's default for a new user) gets NOPERM
    for its subscriptions: the waiter sees ConfigError, as for any refusal, not redis-py's
    own error; and once the ACL is fixed, the same job is heard, not failed forever."""
    admin = redis.Redis.from_url(server.url)
    info = announce(admin, tiny_model("acl"))
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "resetchannels")
    s = Settings(broker_url=server.url.replace("redis://", "redis://app:pw@"), models_dir=tmp_path)

    async def main() -> None:
        async with AsyncClient(s) as client:
            job = await client.submit("acl", np.ones(4, np.float32))
            with pytest.raises(ConfigError, match="no permissions"):
                await job.wait(timeout=10)
            admin.execute_command("ACL", "SETUSER", "app", "allchannels")  # the operator's fix
            store_result(server.url, job.id, info)
            got = await job.wait(timeout=5)
            assert got.outputs["y"].tolist() == [1.0, 1.0]

    run(main)


def test_results_that_arrive_while_a_wait_subscribes_cannot_evict_the_ones_it_waits_for(
    server: LocalRedis, tmp_path: Path
) -> None:
    """A wait on jobs some of which this client already heard (results nobody awaited yet)
    and some it did not: while it subscribed the new ones, other results arriving could evict
    the heard ones (only ``KEEP_ARRIVED_MAX`` unawaited results are kept), and the wait
    failed with a KeyError. A busy gateway has that many results arriving; here the cap is
    1 and the subscription is held up by the listener's lock."""
    s = Settings(broker_url=server.url, models_dir=tmp_path)
    info = announce(redis.Redis.from_url(server.url), tiny_model("evict"))

    async def main() -> None:
        async with AsyncClient(s) as submitter, AsyncClient(s) as poller:
            heard = await poller.submit("evict", np.full(4, 1.0, np.float32))
            other = await poller.submit("evict", np.full(4, 2.0, np.float32))
            new = await submitter.submit("evict", np.full(4, 3.0, np.float32))  # new to the poller
            store_result(server.url, heard.id, info)
            await asyncio.sleep(0.2)  # heard by the poller's listener, awaited by nobody
            poller.listener.KEEP_ARRIVED_MAX = 1
            async with poller.listener._lock:
                both = asyncio.ensure_future(poller.wait_all([heard, new], timeout=10))
                await asyncio.sleep(0.05)  # subscribing ``new``: waiting for the lock
                store_result(server.url, other.id, info)  # arrives meanwhile: one too many kept
                await asyncio.sleep(0.2)
            store_result(server.url, new.id, info)
            results = await both
            assert [type(r).__name__ for r in results] == ["Result", "Result"]

    run(main)


def test_a_job_watched_again_before_its_last_result_is_unsubscribed_is_still_heard(
    server: LocalRedis,
) -> None:
    """A job run again (its last run failed for the moment) is forgotten and watched anew.
    When that happens while the listener is still in the turn that took the last result
    (here: its read of another job's key waits for a connection), its UNSUBSCRIBE of that
    result's channel went out after the new SUBSCRIBE, and the re-run's result was never heard."""
    s = Settings(broker_url=server.url)

    async def main() -> None:
        backend = async_redis_client(server.url, s)
        listener = AsyncResultListener(backend)
        pool = backend.connection_pool
        x, y = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            waiting = asyncio.ensure_future(listener.wait([x], 10))
            await asyncio.sleep(0.2)  # subscribed, and its key read
            held = []  # every free connection: the listener's next read of a key waits
            with contextlib.suppress(TimeoutError):
                while True:
                    held.append(await asyncio.wait_for(pool.get_connection(), 0.1))
            await listener.watch([y])  # its confirmation and x's message arrive in one turn
            failed = StatusRecord.failure(
                x, TransientError("not sent")
            ).encode()  # only published: a re-run deletes it
            redis.Redis.from_url(server.url).publish(result_key(x), failed)
            await waiting
            listener.forget([x])  # x is sent again ...
            await listener.watch([x])  # ... watched anew first
            for conn in held:
                await pool.release(conn)
            await asyncio.sleep(0.3)
            store = redis.Redis.from_url(server.url)
            done = StatusRecord.cancelled(x).encode()  # any ready record of the re-run
            store.set(result_key(x), done)
            store.publish(result_key(x), done)
            (record, _) = (await listener.wait([x], 5))[x]
            assert record.job_status() is JobStatus.CANCELLED
        finally:
            await listener.aclose()
            await backend.aclose()

    run(main)


def test_collect_hands_each_result_over_as_it_arrives_not_after_the_last(server: LocalRedis) -> None:
    """As the sync listener's: ``AsyncClient.wait_all`` reads results while the rest are
    still coming. Half the results stored: ``each`` has all of them (from the loop) while
    ``collect`` still waits; then the rest, each id once; a wait given up hears no more."""
    s = Settings(broker_url=server.url)

    async def main() -> None:
        backend = async_redis_client(server.url, s)
        listener = AsyncResultListener(backend)
        store = redis.Redis.from_url(server.url)
        ids = [uuid.uuid4().hex for _ in range(20)]
        seen: list[str] = []

        def put(jid: str) -> None:
            done = StatusRecord.cancelled(jid).encode()  # any ready record
            store.set(result_key(jid), done)
            store.publish(result_key(jid), done)

        try:
            put(ids[0])  # already here when the wait starts
            await asyncio.sleep(0.2)
            waiting = asyncio.ensure_future(listener.collect(ids, 10, each=lambda jid, _a: seen.append(jid)))
            await asyncio.sleep(0.3)  # subscribed
            for jid in ids[1:10]:
                put(jid)
            for _ in range(100):
                if len(seen) == 10:
                    break
                await asyncio.sleep(0.05)
            assert sorted(seen) == sorted(ids[:10]) and not waiting.done()
            for jid in ids[10:]:
                put(jid)
            assert set(await waiting) == set(ids)
            assert sorted(seen) == sorted(ids) and len(seen) == len(ids)

            late = uuid.uuid4().hex
            with pytest.raises(Timeout):
                await listener.collect([late], 0.3, each=lambda jid, _a: seen.append(jid))
            put(late)
            await asyncio.sleep(0.3)
            assert late not in seen
        finally:
            await listener.aclose()
            await backend.aclose()
            store.close()

    run(main)


def test_the_async_prune_drops_only_what_is_past_its_keep_time(server: LocalRedis, tmp_path: Path) -> None:
    """Arrivals nobody awaited and watches that heard nothing are kept oldest first; the
    prune drops those past ``KEEP_ARRIVED_S`` / ``KEEP_WATCH_S`` and stops at the first
    young one (walking all of them blocked the loop during a bulk wait). What it dropped
    is still there for a later wait, read from Redis."""
    s = Settings(broker_url=server.url, models_dir=tmp_path)
    info = announce(redis.Redis.from_url(server.url), tiny_model("prune"))

    async def main() -> None:
        async with AsyncClient(s) as client:
            listener = client.listener
            listener.KEEP_ARRIVED_S = 1.0
            listener.KEEP_WATCH_S = 1.0
            old_arrival, old_watch = f"old-a-{uuid.uuid4().hex}", f"old-w-{uuid.uuid4().hex}"
            await listener.watch([old_arrival, old_watch])
            store_result(server.url, old_arrival, info)
            await until_async(lambda: listener._futures[old_arrival].done())
            await asyncio.sleep(1.3)  # both older than their keep times now
            young_arrival, young_watch = f"young-a-{uuid.uuid4().hex}", f"young-w-{uuid.uuid4().hex}"
            await listener.watch([young_arrival, young_watch])
            store_result(server.url, young_arrival, info)
            await until_async(lambda: listener._futures[young_arrival].done())
            listener._pruned_at = time.monotonic() - 60  # due (every 5 s otherwise)
            await listener.watch([f"poke-{uuid.uuid4().hex}"])  # a turn of the listener's loop
            await until_async(
                lambda: old_arrival not in listener._futures and old_watch not in listener._futures
            )
            assert young_arrival in listener._futures and young_watch in listener._futures
            store_result(server.url, old_watch, info)
            heard = await listener.wait([old_arrival, old_watch], timeout=5)
            assert {heard[j][0].state for j in heard} == {"SUCCESS"}

    run(main)


async def until_async(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
