"""The client library under production faults: bounded calls, inferq errors only, no stuck claims.

Each test injects the fault the way production meets it, against real redis-servers
(and, where a job must run, a real worker): a hung Redis (SIGSTOP), the broker down
while the result Redis is up, a restart under many threads, a result evicted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from ops.local.redis_server import LocalRedis
from producers.client import Client
from tasks.errors import BadInput, BrokerUnavailable, InferqError, JobNotFound, NotReady, TransientError
from tasks.keys import inflight_key, job_id, queue_name, result_key
from tasks.kombu_layout import queue_lists
from tasks.schema import JobStatus
from tasks.settings import Settings
from tests.conftest import WorkerProcess
from tests.helpers.announced import announce as announce_model
from tests.helpers.announced import tiny_model

pytestmark = pytest.mark.integration

INFO = tiny_model("faulty")


def announce(client: Client) -> None:
    announce_model(client.backend, INFO)


def depth(client: Client) -> int:
    return sum(int(client.broker.llen(lst)) for lst in queue_lists(queue_name(INFO.name, INFO.variant)))


def a_new_input() -> np.ndarray:
    """An input no other call makes (a repeated one would be the same job, sent once)."""
    return np.random.default_rng(uuid.uuid4().int).standard_normal(4).astype(np.float32)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LocalRedis]:
    """A private redis-server that can be stopped and started again on the same port."""
    s = LocalRedis(workdir=tmp_path / "redis").start()
    yield s
    if s.proc is not None:
        os.kill(s.proc.pid, signal.SIGCONT)
    s.stop()


def test_a_hung_redis_gives_broker_unavailable_within_the_bound(server: LocalRedis, tmp_path: Path):
    settings = Settings(broker_url=server.url, models_dir=tmp_path, client_timeout_s=2)
    with Client(settings) as client:
        announce(client)
        client.ping()
        client.models(refresh=True)
        x = a_new_input()
        xs = np.stack([a_new_input() for _ in range(4)])
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for name, call, bound in [
                ("submit", lambda: client.submit("faulty", x, variant="fp32", timeout=2), 2),
                ("submit, default bound", lambda: client.submit("faulty", x, variant="fp32"), 2),
                ("status", lambda: client.status("0" * 32, timeout=1), 1),
                ("result", lambda: client.result("0" * 32, timeout=1), 1),
                ("ping", lambda: client.ping(timeout=1), 1),
                # A bulk call's long timeout bounds the whole call; each message still gets
                # the default bound, so a hung Redis shows after 2 s, not 30.
                (
                    "submit_many, long timeout",
                    lambda: client.submit_many("faulty", xs, variant="fp32", timeout=30),
                    2,
                ),
                (
                    "infer_many, long timeout",
                    lambda: client.infer_many("faulty", xs, variant="fp32", timeout=30),
                    2,
                ),
            ]:
                t0 = time.monotonic()
                with pytest.raises(BrokerUnavailable, match="did not answer within"):
                    call()
                took = time.monotonic() - t0
                assert bound - 0.5 < took < bound + 1.0, f"{name} took {took:.1f} s (bound {bound} s)"
            # A bound shorter than the socket timeout (1 s here) cuts every wait inside the
            # call: the read, the retry's connect and its read.
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="did not answer within"):
                client.status("0" * 32, timeout=0.3)
            assert time.monotonic() - t0 < 0.8
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        client.ping(timeout=10)  # and it recovers once Redis does
        job = client.submit("faulty", a_new_input(), variant="fp32", timeout=10)
        assert job.enqueued


def test_broker_down_results_up_releases_the_claim_and_a_resubmit_after_restart_is_sent(
    server: LocalRedis, own_redis: LocalRedis, tmp_path: Path
):
    settings = Settings(
        broker_url=server.url, result_backend=own_redis.url, models_dir=tmp_path, client_timeout_s=3
    )
    with Client(settings) as client:
        announce(client)
        x = a_new_input()
        jid = job_id(INFO.name, INFO.variant, INFO.version, {"x": x})
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable) as caught:
            client.submit("faulty", x, variant="fp32")
        assert time.monotonic() - t0 < 4
        assert caught.value.__cause__ is not None or "did not answer" in str(caught.value)
        assert not client.backend.exists(inflight_key(jid)), "a failed send must not leave its claim"
        assert client.status(jid) is JobStatus.FAILURE  # answered, so anyone sharing it wakes
        with pytest.raises(TransientError, match="was not sent") as failed:
            client.result(jid)
        assert failed.value.retryable
        server.start()
        job = client.submit("faulty", x, variant="fp32", timeout=10)
        assert job.id == jid and job.enqueued, "the resubmit is sent, not shared with a job that never was"
        assert depth(client) == 1


def test_a_redis_restart_under_16_threads_lets_only_inferq_errors_escape(server: LocalRedis, tmp_path: Path):
    settings = Settings(broker_url=server.url, models_dir=tmp_path, client_timeout_s=2)
    errors: list[BaseException] = []
    done = threading.Event()
    sent = 0
    lock = threading.Lock()

    def hammer(client: Client) -> None:
        nonlocal sent
        while not done.is_set():
            try:
                job = client.submit("faulty", a_new_input(), variant="fp32", timeout=2)
                client.status(job.id, timeout=2)
                with lock:
                    sent += 1
            except BaseException as exc:  # everything, to see what escapes
                with lock:
                    errors.append(exc)
                time.sleep(0.05)

    with Client(settings) as client:
        announce(client)
        threads = [threading.Thread(target=hammer, args=(client,)) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        server.stop()
        time.sleep(1.5)
        server.start()
        announce(client)  # the restarted Redis kept nothing (no persistence)
        time.sleep(2.0)
        done.set()
        for t in threads:
            t.join(timeout=30)
        sent_before = sent
        client.submit("faulty", a_new_input(), variant="fp32", timeout=10)
    foreign = [e for e in errors if not isinstance(e, InferqError)]
    assert not foreign, f"{len(foreign)} non-inferq errors escaped, e.g. {foreign[:3]!r}"
    assert errors, "the outage should have failed some calls"
    assert all(e.retryable for e in errors if isinstance(e, BrokerUnavailable))
    assert sent_before > 16


def test_a_stored_result_ends_its_claim_and_an_evicted_result_is_not_reported_queued(
    digits_worker: WorkerProcess, client: Client, models_dir: Path
):
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[0] + np.float32(time.time() % 1)
    first = client.submit("digits", x, variant="fp32")
    first.wait(timeout=30)
    assert not client.backend.exists(inflight_key(first.id)), "the claim ends when the result is stored"
    client.backend.delete(result_key(first.id))  # evicted (allkeys-lru)
    assert client.status(first.id) is JobStatus.UNKNOWN
    again = client.submit("digits", x, variant="fp32")
    assert again.id == first.id and again.enqueued and not again.cached
    assert again.wait(timeout=30).outputs["probs"].shape == (10,)


def test_a_malformed_id_is_refused_before_any_redis_call(tmp_path: Path):
    # Nothing listens on port 1: any Redis call would fail with BrokerUnavailable instead.
    with Client(
        Settings(broker_url="redis://127.0.0.1:1/0", models_dir=tmp_path, client_timeout_s=5)
    ) as client:
        for bad in ("../etc", "x" * 100_000, "", "a b", "id\x00"):
            t0 = time.monotonic()
            with pytest.raises(BadInput, match="a job id is 1 to 64 letters, digits and '-'"):
                client.status(bad)
            with pytest.raises(BadInput, match="a job id is"):
                client.result(bad)
            assert time.monotonic() - t0 < 0.5


def test_unknown_queued_and_finished_ids_are_told_apart(own_redis: LocalRedis, tmp_path: Path):
    with Client(Settings(broker_url=own_redis.url, models_dir=tmp_path)) as client:
        announce(client)
        unknown = "f" * 32
        assert client.status(unknown) is JobStatus.UNKNOWN
        with pytest.raises(JobNotFound, match="is unknown"):
            client.result(unknown)
        job = client.submit("faulty", a_new_input(), variant="fp32")  # no worker: it stays queued
        assert client.status(job.id) is JobStatus.QUEUED
        with pytest.raises(NotReady, match=r"no result yet \(status queued\)") as caught:
            client.result(job.id)
        assert caught.value.retryable


def connections(r: redis.Redis[bytes]) -> int:
    """Clients connected to the server, this monitoring connection excluded."""
    return len(r.client_list()) - 1


def test_64_threads_on_one_client_use_a_bounded_number_of_connections_all_closed_by_close(
    own_redis: LocalRedis, tmp_path: Path
):
    monitor = redis.Redis.from_url(own_redis.url)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, connections(monitor))
            time.sleep(0.05)

    errors: list[BaseException] = []
    client = Client(Settings(broker_url=own_redis.url, models_dir=tmp_path))
    announce(client)

    def work() -> None:
        try:
            for _ in range(15):
                job = client.submit("faulty", a_new_input(), variant="fp32", timeout=30)
                client.status(job.id, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=work) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert depth(client) == 64 * 15
    client.close()
    deadline = time.monotonic() + 5
    while connections(monitor) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    watcher.join()
    left = connections(monitor)
    monitor.close()
    # Its connection pools are bounded (each Redis: ``connections`` for calls; jobs are
    # pushed on the broker one), plus the listener's subscription, however many threads
    # call it (64 here).
    assert peak <= 2 * client.bound.connections + 2 < 64, f"{peak} connections at the peak"
    assert left == 0, f"{left} connection(s) left open after close()"


def test_a_job_lost_in_flight_is_reported_lost_after_the_visibility_bound(
    own_redis: LocalRedis, tmp_path: Path
):
    settings = Settings(broker_url=own_redis.url, models_dir=tmp_path, visibility_timeout_s=3)
    with Client(settings) as client:
        announce(client)
        x = a_new_input()
        job = client.submit("faulty", x, variant="fp32")
        assert client.status(job.id) is JobStatus.QUEUED
        client.broker.delete(*queue_lists(queue_name(INFO.name, INFO.variant)))  # the message is lost
        assert client.status(job.id) is JobStatus.QUEUED, "within the visibility bound it may still come"
        time.sleep(3.5)
        assert client.status(job.id) is JobStatus.LOST
        with pytest.raises(JobNotFound, match="lost in flight"):
            client.result(job.id)
        again = client.submit("faulty", x, variant="fp32")
        assert again.id == job.id and again.enqueued, "a lost job's input is sent again"
        assert client.status(job.id) is JobStatus.QUEUED


def test_a_deep_queue_is_not_mistaken_for_a_lost_job(own_redis: LocalRedis, tmp_path: Path):
    settings = Settings(broker_url=own_redis.url, models_dir=tmp_path, visibility_timeout_s=1)
    with Client(settings) as client:
        announce(client)
        job = client.submit("faulty", a_new_input(), variant="fp32")
        time.sleep(1.5)  # older than the bound, but its message still waits in the queue
        assert client.status(job.id) is JobStatus.QUEUED


def test_a_job_shared_with_a_send_that_fails_wakes_its_waiter_with_a_retryable_error(
    own_redis: LocalRedis, tmp_path: Path
):
    """A resubmit while the first send hangs shares that job; when the send then fails, the
    sharer must not wait for a job nobody sends."""
    settings = Settings(broker_url=own_redis.url, models_dir=tmp_path)
    with Client(settings) as first, Client(settings) as second:
        announce(first)
        x = a_new_input()
        jid = job_id(INFO.name, INFO.variant, INFO.version, {"x": x})
        assert first.claims.check_and_claim([jid], INFO.key)[0][0] == 0  # claimed, send in flight
        shared = second.submit("faulty", x, variant="fp32")
        assert shared.id == jid and not shared.enqueued
        first.claims.release([jid], "ConnectionError: the broker went away")
        t0 = time.monotonic()
        with pytest.raises(TransientError, match="was not sent: ConnectionError"):
            shared.wait(timeout=10)
        assert time.monotonic() - t0 < 2
        again = second.submit("faulty", x, variant="fp32")
        assert again.enqueued, "a resubmit redoes it"


def test_a_ragged_input_is_bad_input_not_a_numpy_error(own_redis: LocalRedis, tmp_path: Path):
    with Client(Settings(broker_url=own_redis.url, models_dir=tmp_path)) as client:
        announce(client)
        with pytest.raises(BadInput, match="expected a rectangular array of numbers"):
            client.submit("faulty", [[1.0, 2.0], [3.0]], variant="fp32")


def test_calls_after_close_raise_an_inferq_error(own_redis: LocalRedis, tmp_path: Path):
    client = Client(Settings(broker_url=own_redis.url, models_dir=tmp_path))
    client.ping()
    client.close()
    with pytest.raises(BrokerUnavailable, match="the client is closed"):
        client.status("a" * 32)
