"""A dead worker's jobs run elsewhere within seconds; a live worker's jobs never run twice.

Issue 18, item 3. Real ``redis-server``s and real worker processes (digits fp32), at the
default 60 s visibility timeout unless a test says otherwise, so that only the heartbeat
lease (``workers/broker/leases.py``) can explain a fast recovery. Where a test must count
computations or make batches slow, its workers run with ``LiteRTRuntime.predict``
wrapped (``counting_worker``): each batch sleeps, then appends a digest of every input
row it computes to a file, so a job computed twice shows up twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio

from ops.local.redis_server import LocalRedis
from producers.claims import CLAIMED, SHARED, AsyncClaims, Claims
from producers.client import Client
from tasks.app import create_app
from tasks.constants import PREDICT_TASK
from tasks.keys import inflight_key, queue_name, result_key
from tasks.kombu_layout import UNACKED, UNACKED_INDEX, decode_unacked_entry, queue_lists
from tasks.liveness import HOLDERS, LEASES, SWEEP_TURN, alive_key
from tasks.settings import Settings
from tasks.wire import Claim, Result
from tests.conftest import ROOT, WorkerProcess, queue_depth
from workers.broker.envelope import parse_message
from workers.broker.fetcher import Delivery, Fetcher
from workers.broker.leases import Leases

pytestmark = pytest.mark.integration

QUEUE = queue_name("digits", "fp32")

#: Run as ``python WRAPPER python -m ops.cli worker ...``: the worker, with a slow, counting runtime.
WRAPPER = """
import hashlib, os, sys, time
sys.path.insert(0, {root!r})
from workers.models.runtimes import litert

_predict = litert.LiteRTRuntime.predict

def predict(self, inputs):
    time.sleep({sleep_s!r})
    x = next(iter(inputs.values()))
    with open({log!r}, "a") as f:
        f.write("".join(hashlib.sha1(row.tobytes()).hexdigest() + "\\n" for row in x))
    return _predict(self, inputs)

litert.LiteRTRuntime.predict = predict
sys.argv = ["ops.cli", *sys.argv[4:]]
from ops.cli import main
sys.exit(main())
"""


@pytest.fixture()
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as s:
        yield s


@pytest.fixture()
def r(server: LocalRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url)


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts digits:fp32 workers (plain, or slow and counting) and stops those left at the end."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings, *extra: str, sleep_s: float | None = None, wait: bool = True
    ) -> WorkerProcess:
        prefix = None
        if sleep_s is not None:
            wrapper = tmp_path / f"worker-{len(started)}.py"
            wrapper.write_text(
                WRAPPER.format(root=str(ROOT), sleep_s=sleep_s, log=str(computed_log(tmp_path)))
            )
            prefix = [sys.executable, str(wrapper)]
        w = WorkerProcess(
            settings, ["digits:fp32"], tmp_path / f"worker-{len(started)}.log", *extra, prefix=prefix
        )
        started.append(w)
        if wait:
            with Client(settings) as c:
                w.wait_ready(c)
        return w

    yield start
    for w in started:
        if w.alive:
            os.kill(w.proc.pid, signal.SIGCONT)  # a test that failed may have left it paused
        w.stop()


def computed_log(tmp_path: Path) -> Path:
    return tmp_path / "computed.txt"


def digest(row: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(row, np.float32).tobytes()).hexdigest()


def computed(tmp_path: Path, xs: np.ndarray) -> Counter[str]:
    """How many times each of ``xs`` was computed by the counting workers."""
    path = computed_log(tmp_path)
    seen = Counter(path.read_text().split()) if path.exists() else Counter()
    return Counter({digest(x): seen[digest(x)] for x in xs})


def fresh_inputs(models_dir: Path, n: int) -> np.ndarray:
    """``n`` distinct digits images no other test sent (so none comes from the cache)."""
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")
    x = np.resize(x, (n, *x.shape[1:]))
    jitter = np.float32(time.time() % 1) * 1e-3 + np.arange(n, dtype=np.float32)[:, None, None, None] * 1e-6
    return (x + jitter).astype(np.float32)


def held_by(r: redis.Redis, pid: int) -> list[str]:
    """Delivery tags the worker process ``pid`` is recorded as holding."""
    return [t.decode() for t, w in r.hgetall(HOLDERS).items() if f".{pid}." in w.decode()]


def job_ids_of(r: redis.Redis, tags: list[str]) -> list[str]:
    """The job ids in the unacknowledged messages ``tags``."""
    out: list[str] = []
    if not tags:
        return out
    for entry in r.hmget(UNACKED, tags):
        if entry is not None:
            message, _, _ = decode_unacked_entry(entry)
            out += [jid for jid, _ in parse_message(json.dumps(message).encode())]
    return out


def assert_all_good(results: list[object], n: int) -> list[Result]:
    good = [x for x in results if isinstance(x, Result)]
    assert len(good) == n, [x for x in results if not isinstance(x, Result)][:3]
    return good


# --- (1) a killed worker's jobs run elsewhere within seconds ---------------------------------


def test_a_killed_workers_jobs_complete_on_another_worker_within_10_s_at_the_default_visibility_timeout(
    server: LocalRedis, models_dir: Path, workers: Callable[..., WorkerProcess]
) -> None:
    settings = Settings(broker_url=server.url, models_dir=models_dir, metrics_port=0)
    assert settings.visibility_timeout_s == 60 and settings.lease_s == 5
    doomed = workers(settings, "--max-batch-size", "16")
    survivor = workers(settings)
    with Client(settings) as client:
        # Both idle and paused while the backlog is queued (holding nothing, so their
        # lapsed leases cost nothing); then the doomed one takes jobs and is killed
        # mid-stream, and the survivor carries on.
        for w in (doomed, survivor):
            os.kill(w.proc.pid, signal.SIGSTOP)
        jobs = client.submit_many("digits", fresh_inputs(models_dir, 1500), variant="fp32", chunk_size=1)
        os.kill(doomed.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while (
            len(held_by(client.broker, doomed.proc.pid)) < 8
            or queue_depth(client.broker, "digits", "fp32") > 1400
        ):
            assert time.monotonic() < deadline, doomed.log_text()[-2000:]
            time.sleep(0.002)
        doomed.proc.kill()
        killed_at = time.time()
        doomed.proc.wait()
        os.kill(survivor.proc.pid, signal.SIGCONT)
        # The dead worker's records are exact once it is dead: these jobs it held.
        held = job_ids_of(client.broker, held_by(client.broker, doomed.proc.pid))
        assert held
        results = assert_all_good(client.wait_all(jobs, timeout=120), len(jobs))
    finished = {x.job_id: x.timing.finished_at for x in results}
    stall = max(finished[j] for j in held) - killed_at
    print(f"\n{len(held)} jobs held by the killed worker, all done {stall:.2f} s after the kill")
    assert stall < 10, f"the killed worker's jobs took {stall:.1f} s to complete elsewhere"
    assert "whose worker died" in survivor.log_text()
    assert client.broker.zcard(UNACKED_INDEX) == 0 and client.broker.hlen(HOLDERS) == 0
    # The dead worker left the lease index once nothing of it was left to take back.
    time.sleep(2)
    assert not [w for w in client.broker.zrange(LEASES, 0, -1) if f".{doomed.proc.pid}.".encode() in w]


# --- (2) a live worker whose batch outlasts the lease keeps its jobs -------------------------


def test_a_live_worker_whose_batches_outlast_the_lease_is_never_taken_from(
    server: LocalRedis, models_dir: Path, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    settings = Settings(broker_url=server.url, models_dir=models_dir, metrics_port=0, lease_s=2)
    slow = [workers(settings, "--max-batch-size", "4", sleep_s=3.0) for _ in range(2)]
    xs = fresh_inputs(models_dir, 16)
    with Client(settings) as client:
        jobs = client.submit_many("digits", xs, variant="fp32", chunk_size=1)
        assert_all_good(client.wait_all(jobs, timeout=120), len(jobs))
    counts = computed(tmp_path, xs)
    assert set(counts.values()) == {1}, f"computed more or less than once: {counts}"
    for w in slow:
        assert "took back" not in w.log_text() and "lapsed" not in w.log_text()


# --- (3) a resubmit while the first message waits in a deep queue ----------------------------


def test_resubmitting_jobs_queued_longer_than_the_visibility_timeout_computes_each_once(
    server: LocalRedis, models_dir: Path, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    settings = Settings(broker_url=server.url, models_dir=models_dir, metrics_port=0, visibility_timeout_s=2)
    slow = workers(settings, "--max-batch-size", "2", sleep_s=1.0)
    xs = fresh_inputs(models_dir, 12)
    with Client(settings) as client:
        first = client.submit_many("digits", xs, variant="fp32", chunk_size=1)
        time.sleep(settings.visibility_timeout_s + 0.5)  # every claim is older than the timeout
        assert queue_depth(client.broker, "digits", "fp32") > 0, "the backlog should still be queued"
        again = client.submit_many("digits", xs, variant="fp32", chunk_size=1)
        # Later, the queue is empty but the worker still holds the last batches.
        deadline = time.monotonic() + 60
        while queue_depth(client.broker, "digits", "fp32") or not held_by(client.broker, slow.proc.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        last = client.submit_many("digits", xs, variant="fp32", chunk_size=1)
        for batch in (first, again, last):
            assert_all_good(client.wait_all(batch, timeout=60), len(xs))
    counts = computed(tmp_path, xs)
    assert set(counts.values()) == {1}, f"computed more or less than once: {counts}"


def send(server: LocalRedis, job_id: str) -> None:
    app = create_app(Settings(broker_url=server.url))
    request = {"model": "digits", "variant": "fp32", "inputs": {}}
    app.send_task(PREDICT_TASK, args=[request], task_id=job_id, queue=QUEUE, priority=0)


def test_a_stale_claim_is_taken_over_only_when_nothing_could_still_run_its_job(
    server: LocalRedis, r: redis.Redis
) -> None:
    claims = Claims(r, 600, stale_after_s=10)
    sec, _ = r.time()
    old = Claim.encode(sec - 30, "digits:fp32")

    def resubmit(jid: str) -> int:
        r.set(inflight_key(jid), old)
        return int(claims.check_and_claim([jid], "digits:fp32")[0][0])

    send(server, "someone-else")  # a message waits in the job's queue: it might be this job
    assert resubmit("j1") == SHARED
    fetcher = Fetcher(r, [QUEUE], lambda _: None, capacity=1)
    [d] = fetcher._take(1)  # now it is held, fetched after the claim: it still might be
    assert resubmit("j2") == SHARED
    r.zadd(UNACKED_INDEX, {d.tag: sec - 60})  # held since before the claim: it cannot be
    assert resubmit("j3") == CLAIMED
    assert Claim.parse(r.get(inflight_key("j3"))) > sec - 5  # type: ignore[operator]
    fetcher.ack([d])
    assert resubmit("j4") == CLAIMED  # nothing anywhere: the message was lost
    # A result stored meanwhile is served, never sent again.
    r.set(inflight_key("j5"), old)
    r.set(result_key("j5"), b"x")
    assert int(claims.check_and_claim(["j5"], "digits:fp32")[0][0]) != CLAIMED


def test_the_async_client_takes_over_stale_claims_by_the_same_rule(
    server: LocalRedis, r: redis.Redis
) -> None:
    async def resubmit(jid: str) -> int:
        backend = redis.asyncio.Redis.from_url(server.url)
        try:
            claims = AsyncClaims(backend, 600, stale_after_s=10, broker=backend)
            return int((await claims.check_and_claim([jid], "digits:fp32"))[0][0])
        finally:
            await backend.aclose()

    sec, _ = r.time()
    r.set(inflight_key("a1"), Claim.encode(sec - 30, "digits:fp32"))
    send(server, "someone-else")
    assert asyncio.run(resubmit("a1")) == SHARED
    r.delete(*queue_lists(QUEUE))
    assert asyncio.run(resubmit("a1")) == CLAIMED


# --- (4) a graceful stop leaves no lease and no holder record --------------------------------


def test_a_gracefully_stopped_worker_leaves_no_alive_key_and_no_holder_record(
    server: LocalRedis, models_dir: Path, workers: Callable[..., WorkerProcess], r: redis.Redis
) -> None:
    settings = Settings(broker_url=server.url, models_dir=models_dir, metrics_port=0)
    w = workers(settings, "--max-batch-size", "2", sleep_s=0.5)
    pid = w.proc.pid
    assert [k for k in r.keys(alive_key("*")) if f".{pid}.".encode() in k]
    with Client(settings) as client:
        client.submit_many("digits", fresh_inputs(models_dir, 20), variant="fp32", chunk_size=1)
        deadline = time.monotonic() + 60
        while not held_by(r, pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    w.stop()
    assert w.proc.returncode is not None
    assert not held_by(r, pid)
    assert not [k for k in r.keys(alive_key("*")) if f".{pid}.".encode() in k]
    assert not [m for m in r.zrange(LEASES, 0, -1) if f".{pid}.".encode() in m]
    assert r.zcard(UNACKED_INDEX) == 0 and r.hlen(UNACKED) == 0
    assert queue_depth(r, "digits", "fp32") > 0, "what it had not run went back to the queue"


# --- (5) take-backs are atomic ---------------------------------------------------------------


def fetch_as(r: redis.Redis, worker_id: str, n: int) -> list[Delivery]:
    """Fetch as a live worker would (its lease is up: a lapsed worker takes nothing)."""
    r.set(alive_key(worker_id), "1", px=60_000)
    f = Fetcher(r, [QUEUE], lambda _: None, capacity=n, worker_id=worker_id)
    out: list[Delivery] = []
    while len(out) < n:
        got = f._take(n - len(out))
        assert got
        out += got
    return out


def dead(r: redis.Redis, worker_id: str) -> None:
    """Index ``worker_id`` as a worker whose lease ended (and give it no alive key)."""
    sec, _ = r.time()
    r.zadd(LEASES, {worker_id: sec - 1})
    r.delete(alive_key(worker_id))


def test_a_live_holder_is_never_taken_from_and_a_dead_ones_messages_go_back_once(
    server: LocalRedis, r: redis.Redis
) -> None:
    for i in range(5):
        send(server, f"job-{i}")
    fetch_as(r, "w-live", 5)
    dead(r, "w-live")
    r.set(alive_key("w-live"), "1", px=60_000)  # its index entry is old, but its key says alive
    sweeper = Leases(r, visibility_timeout_s=60, lease_s=5)
    assert sweeper.beat() == 0
    assert r.hlen(HOLDERS) == 5 and r.llen(QUEUE) == 0
    r.delete(alive_key("w-live"), SWEEP_TURN)
    assert sweeper.beat() == 5
    assert r.llen(QUEUE) == 5 and r.hlen(HOLDERS) == 0 and r.zcard(UNACKED_INDEX) == 0
    # The dead worker holds nothing now: the next sweep drops it from the index.
    r.delete(SWEEP_TURN)
    sweeper.beat()
    assert r.zscore(LEASES, "w-live") is None
    assert r.zscore(LEASES, sweeper.worker_id) is not None and r.exists(alive_key(sweeper.worker_id))
    sweeper.stop()
    assert not r.exists(alive_key(sweeper.worker_id)) and r.zscore(LEASES, sweeper.worker_id) is None


def test_acks_racing_take_backs_lose_nothing_and_put_nothing_back_twice(
    server: LocalRedis, r: redis.Redis
) -> None:
    n = 200
    for i in range(n):
        send(server, f"job-{i}")
    got = fetch_as(r, "w-dying", n)
    dead(r, "w-dying")
    acked = got[::2]  # a worker "dying" while it acks half of what it held
    pairs = [(d.tag, "w-dying") for d in got]
    sweepers = [Leases(redis.Redis.from_url(server.url), visibility_timeout_s=60) for _ in range(3)]
    acker = Fetcher(redis.Redis.from_url(server.url), [QUEUE], lambda _: None, capacity=n)
    threads = [threading.Thread(target=s.take_back_dead, args=(pairs,)) for s in sweepers]
    threads.append(threading.Thread(target=lambda: [acker.ack([d]) for d in acked]))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = [parse_message(raw)[0][0] for raw in r.lrange(QUEUE, 0, -1)]
    assert len(back) == len(set(back)) == sum(s.taken_back for s in sweepers), "a message went back twice"
    assert {f"job-{i}" for i in range(1, n, 2)} <= set(back), "an unacked message was not taken back"
    assert r.zcard(UNACKED_INDEX) == 0 and r.hlen(UNACKED) == 0 and r.hlen(HOLDERS) == 0
