"""Per-job deadlines, the producer's queue limit and priorities, on a real worker and Redis."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery

from producers.client import Client
from tasks.constants import PREDICT_TASK
from tasks.errors import BadInput, Expired, Overloaded
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists
from tasks.settings import Settings
from tasks.wire import Result
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.integration


def fresh(settings: Settings, n: int) -> np.ndarray:
    x = np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")[:n]
    return (
        x + np.float32(time.time() % 1) * 1e-3 + np.arange(n, dtype=np.float32)[:, None, None, None] * 1e-5
    ).astype(np.float32)


def test_a_job_past_its_deadline_is_not_computed_and_ends_expired(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    xs = fresh(settings, 4)
    late = client.submit("digits", xs[0], variant="fp16", deadline_ms=200)
    in_time = client.submit("digits", xs[1], variant="fp16", deadline_ms=60_000)
    # A plain Celery client's own deadline, ``expires``, counts the same.
    plain = Celery("plain", broker=settings.broker_url, backend=settings.result_backend)
    plain.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])

    def celery_job(x: np.ndarray, expires: float) -> str:
        req = {"model": "digits", "variant": "fp16", "inputs": {"image": x.tolist()}}
        queue = queue_name("digits", "fp16")
        return str(plain.send_task(PREDICT_TASK, args=[req], queue=queue, expires=expires).id)

    celery_late, celery_in_time = celery_job(xs[2], 0.2), celery_job(xs[3], 60)
    time.sleep(0.5)  # no fp16 worker yet: the first jobs' deadlines pass in the queue
    w = WorkerProcess(settings, ["digits:fp16"], tmp_path / "w.log")
    try:
        w.wait_ready(client)
        with pytest.raises(Expired, match="after its deadline; not computed"):
            late.wait(timeout=30)
        assert client.status(late.id).value == "expired"
        assert in_time.wait(timeout=30).outputs["probs"].shape == (10,)
        with pytest.raises(Expired, match="after its deadline; not computed"):
            client.result(celery_late, wait=True, timeout=30)
        assert client.result(celery_in_time, wait=True, timeout=30).outputs["probs"].shape == (10,)
        # An expired job is not a cache entry: the same input submitted again is computed.
        again = client.submit("digits", xs[0], variant="fp16")
        assert again.enqueued and not again.cached
        assert again.wait(timeout=30).outputs["probs"].shape == (10,)
    finally:
        w.stop()


def test_producer_refuses_with_overloaded_past_the_queue_limit(settings: Settings) -> None:
    limited = settings.with_(max_queue_depth=10)
    broker = redis.Redis.from_url(settings.broker_url)
    with Client(limited) as c:
        xs = fresh(settings, 30)
        accepted = [
            c.submit("digits", x, variant="fp16") for x in xs[:10]
        ]  # no fp16 worker: they stay queued
        assert all(j.enqueued for j in accepted)
        with pytest.raises(
            Overloaded, match=r"inferq\.digits\.fp16 holds \d+ jobs; adding 1 would pass the limit of 10"
        ):
            c.submit("digits", xs[10], variant="fp16")
        time.sleep(0.3)  # past the depth cache: still refused, read from Redis
        with pytest.raises(Overloaded):
            c.submit("digits", xs[11], variant="fp16")
        # A refused job left no in-flight claim: once there is room it is accepted.
        broker.delete(*queue_lists("inferq.digits.fp16"))
        time.sleep(0.3)
        assert c.submit("digits", xs[11], variant="fp16").enqueued
    broker.delete(*queue_lists("inferq.digits.fp16"))


def test_high_priority_jobs_overtake_queued_normal_ones_and_low_ones_wait(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    xs = fresh(settings, 206)
    low = client.submit("digits", xs[0], variant="fp16", priority="low")
    normal = client.submit_many("digits", xs[1:201], variant="fp16", chunk_size=1)
    high = [client.submit("digits", x, variant="fp16", priority="high") for x in xs[201:]]
    w = WorkerProcess(settings, ["digits:fp16"], tmp_path / "w.log", "--max-batch-size", "8")
    try:
        w.wait_ready(client)  # only now does anything read the queue
        results = client.wait_all([low, *normal, *high], timeout=60)
    finally:
        w.stop()
    assert all(isinstance(r, Result) for r in results), results[:3]
    done = {r.job_id: r.timing.finished_at for r in results if isinstance(r, Result)}
    normal_done = sorted(done[j.id] for j in normal)
    # Sent last, the high jobs are in the worker's first fetch: done before 90% of the
    # normal ones. Sent first, the low job is fetched after every normal one.
    assert all(done[j.id] <= normal_done[20] for j in high), "a high-priority job did not overtake"
    assert done[low.id] >= normal_done[-20], "a low-priority job went before normal ones"


def test_an_unknown_priority_is_refused_naming_the_choices(digits_worker, client: Client) -> None:
    x = fresh(client.settings, 1)[0]
    with pytest.raises(BadInput, match=r"priority must be one of \['high', 'low', 'normal'\], got 'urgent'"):
        client.submit("digits", x, priority="urgent")
