"""Dynamic batching, bulk jobs, metrics and status on a real worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from ops.local.redis_server import free_port
from producers.client import Client
from tasks.errors import BadInput, TransientError
from tasks.keys import job_id
from tasks.kombu_layout import UNACKED, UNACKED_INDEX
from tasks.settings import Settings
from tests.conftest import ROOT, WorkerProcess, queue_depth, started_worker
from workers.models.registry import Registry

pytestmark = pytest.mark.integration


def heldout(settings: Settings) -> np.ndarray:
    return np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")


def unique(x: np.ndarray) -> np.ndarray:
    """Inputs no earlier test submitted (so nothing comes from the cache)."""
    return (x + np.float32(time.time() % 1) * 1e-3).astype(np.float32)


def start_worker(settings: Settings, tmp_path: Path, models: list[str], *extra: str) -> WorkerProcess:
    return started_worker(settings, models, tmp_path / f"worker-{time.monotonic_ns()}.log", *extra)


@pytest.fixture()
def fp16_worker_after(settings: Settings, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Holder for a digits:fp16 worker a test starts after queueing jobs (no other worker reads fp16)."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def test_queued_jobs_are_batched_and_match_direct_results(
    settings: Settings, client: Client, tmp_path: Path, fp16_worker_after
) -> None:
    from workers.models.runtimes.litert import LiteRTRuntime

    xs = unique(heldout(settings)[:200])
    jobs = client.submit_many("digits", xs, variant="fp16")
    # A long max wait: batches close only when full (the last one aside), however slowly
    # a loaded machine decodes the bulk messages into the batcher.
    fp16_worker_after.append(
        start_worker(settings, tmp_path, ["digits:fp16"], "--max-batch-size", "32", "--max-wait-ms", "500")
    )
    results = client.wait_all(jobs, timeout=60)
    sizes = [r.timing.batch_size for r in results]  # type: ignore[union-attr]
    assert max(sizes) == 32 and min(sizes) >= 1
    assert np.mean(sizes) > 8, f"queued jobs were not batched: mean batch {np.mean(sizes):.1f}"
    runtime = LiteRTRuntime(Registry(settings.models_dir).get("digits", "fp16"), threads=1)
    direct = runtime.predict({"image": xs})["probs"]
    got = np.stack([r.outputs["probs"] for r in results])  # type: ignore[union-attr]
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def test_batching_off_runs_one_job_per_model_call(
    settings: Settings, client: Client, tmp_path: Path, fp16_worker_after
) -> None:
    jobs = client.submit_many("digits", unique(heldout(settings)[:40]), variant="fp16")
    fp16_worker_after.append(start_worker(settings, tmp_path, ["digits:fp16"], "--max-batch-size", "1"))
    results = client.wait_all(jobs, timeout=60)
    assert {r.timing.batch_size for r in results} == {1}  # type: ignore[union-attr]


def test_a_lone_job_waits_at_most_max_wait(
    settings: Settings, client: Client, tmp_path: Path, fp16_worker_after
) -> None:
    fp16_worker_after.append(start_worker(settings, tmp_path, ["digits:fp16"], "--max-wait-ms", "80"))
    res = client.submit("digits", unique(heldout(settings)[0]), variant="fp16").wait(timeout=30)
    assert res.timing.batch_size == 1
    assert 70 <= res.timing.batch_wait_ms < 400, res.timing


def test_one_bad_input_fails_alone_while_its_batch_mates_succeed(
    settings: Settings, client: Client, tmp_path: Path, fp16_worker_after
) -> None:
    xs = unique(heldout(settings)[:30])
    good = client.submit_many("digits", xs[:15], variant="fp16")
    bad = client.submit(
        "digits", np.full((28, 28, 1), np.nan, np.float32) + xs[0], variant="fp16", validate=False
    )
    more = client.submit_many("digits", xs[15:], variant="fp16")
    fp16_worker_after.append(start_worker(settings, tmp_path, ["digits:fp16"]))
    results = client.wait_all([*good, *more], timeout=60)
    assert all(not isinstance(r, Exception) for r in results)
    assert max(r.timing.batch_size for r in results) > 1  # type: ignore[union-attr]
    with pytest.raises(BadInput, match="NaN"):
        bad.wait(timeout=30)


@pytest.fixture(scope="module")
def reshaper(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model with a dynamic input whose kernel fails at run time unless len % 4 == 0."""
    out = tmp_path_factory.mktemp("reshaper")
    script = f"""
import tensorflow as tf
class M(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def serve(self, x):
        return {{"total": tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1, 4]), axis=[1, 2])}}
m = M()
tf.saved_model.save(m, "{out}/sm", signatures={{"serving_default": m.serve}})
open("{out}/reshaper.tflite", "wb").write(tf.lite.TFLiteConverter.from_saved_model("{out}/sm").convert())
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, cwd=ROOT)
    subprocess.run(
        # --force: the models folder may be a cached one (INFERQ_TEST_MODELS_DIR) that has it
        [sys.executable, "-m", "ops.cli", "models", "add", "reshaper", str(out / "reshaper.tflite"), "--force"],
        env={**os.environ, **settings.env()}, check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return "reshaper:fp32"


def test_inputs_of_different_shapes_go_to_different_batches(
    reshaper: str, settings: Settings, client: Client, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(4 if i % 2 else 8,)).astype(np.float32) for i in range(40)]
    jobs = [client.submit("reshaper", x, no_cache=True) for x in xs]
    w = start_worker(settings, tmp_path, [reshaper])
    try:
        results = client.wait_all(jobs, timeout=60)
    finally:
        w.stop()
    for x, r in zip(xs, results, strict=True):
        assert not isinstance(r, Exception), r
        np.testing.assert_allclose(r.outputs["total"], x.sum(), rtol=1e-5)
    assert max(r.timing.batch_size for r in results) > 1  # type: ignore[union-attr]


def test_a_batch_that_fails_in_the_runtime_fails_every_job_with_the_reason(
    reshaper: str, settings: Settings, client: Client, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    broken = [
        client.submit("reshaper", rng.normal(size=(5,)).astype(np.float32), no_cache=True) for _ in range(6)
    ]
    fine = client.submit("reshaper", np.ones(4, np.float32), no_cache=True)
    x5 = np.full(5, time.time() % 1e3, np.float32)  # an input no earlier run sent
    cached = client.submit("reshaper", x5)
    w = start_worker(settings, tmp_path, [reshaper])
    try:
        results = client.wait_all([*broken, fine], timeout=60)
        assert isinstance(client.wait_all([cached], timeout=60)[0], TransientError)
        # A failure of the moment is not a cache hit: the same input is run again, and
        # its waiter gets the new run's outcome, not the stored failure.
        again = client.submit("reshaper", x5)
        assert again.id == cached.id and again.enqueued and not again.cached
        assert isinstance(client.wait_all([again], timeout=60)[0], TransientError)
        assert w.alive
    finally:
        w.stop()
    for r in results[:-1]:
        assert isinstance(r, TransientError) and "runtime failed" in str(r) and "RESHAPE" in str(r).upper(), r
    assert all(client.status(j.id).value == "failure" for j in broken)
    assert not isinstance(results[-1], Exception) and results[-1].outputs["total"] == 4.0


def test_submit_many_keeps_ids_order_and_cache_per_input(
    digits_worker, settings: Settings, client: Client
) -> None:
    xs = unique(heldout(settings)[:100])
    info = client.model_info("digits", "int8")
    jobs = client.submit_many("digits", xs, variant="int8", chunk_size=16)
    assert [j.id for j in jobs] == [job_id("digits", "int8", info.version, {"image": x}) for x in xs]
    results = client.wait_all(jobs, timeout=60)
    singles = [client.submit("digits", x, variant="int8") for x in xs[:10]]
    assert all(j.cached for j in singles)
    for s, r in zip(singles, results, strict=False):
        np.testing.assert_array_equal(s.wait().outputs["probs"], r.outputs["probs"])  # type: ignore[union-attr]
    mixed = np.concatenate([xs[50:], unique(heldout(settings)[100:150]) + 1e-3])
    again = client.submit_many("digits", mixed, variant="int8", chunk_size=16)
    assert [j.cached for j in again] == [True] * 50 + [False] * 50
    assert all(not isinstance(r, Exception) for r in client.wait_all(again, timeout=60))


def test_cli_submit_many_npy_prints_results_in_order(
    digits_worker, settings: Settings, tmp_path: Path
) -> None:
    xs = unique(heldout(settings)[200:230])
    np.save(tmp_path / "many.npy", xs)
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "submit", "digits:int8", "--input", str(tmp_path / "many.npy"),
         "--wait", "--json", "--chunk-size", "8"],
        env={**os.environ, **settings.env()}, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out) == 30
    with Client(settings) as c:
        direct = [c.submit("digits", x, variant="int8").wait(timeout=30) for x in xs]
    assert all(d.cached for d in direct)  # the CLI's jobs filled the cache, input by input
    assert [o["job_id"] for o in out] == [d.job_id for d in direct]


def test_prefetch_is_bounded_with_thousands_of_jobs_waiting(
    settings: Settings, client: Client, tmp_path: Path, fp16_worker_after
) -> None:
    base = unique(np.concatenate([heldout(settings)] * 14)[:5000])
    xs = (base + np.arange(5000, dtype=np.float32)[:, None, None, None] * 1e-5).astype(
        np.float32
    )  # all distinct
    jobs = client.submit_many("digits", xs, variant="fp16", chunk_size=1)
    broker = redis.Redis.from_url(settings.broker_url)
    assert queue_depth(broker, "digits", "fp16") == 5000
    fp16_worker_after.append(start_worker(settings, tmp_path, ["digits:fp16"], "--max-batch-size", "16"))
    peak = 0
    while queue_depth(broker, "digits", "fp16") > 500:
        peak = max(peak, int(broker.zcard(UNACKED_INDEX)))
        time.sleep(0.01)
    # Capacity is 2 batches (32) or the prefetch setting, whichever is larger.
    assert peak <= max(settings.prefetch, 32), f"{peak} messages held unacknowledged at once"
    assert all(not isinstance(r, Exception) for r in client.wait_all(jobs, timeout=120))
    assert broker.zcard(UNACKED_INDEX) == 0 and broker.hlen(UNACKED) == 0


def test_prometheus_metrics_scrape_and_parse(settings: Settings, client: Client, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    w = start_worker(settings, tmp_path, ["digits:fp16"], "--metrics-port", str(port))
    try:
        xs = unique(heldout(settings)[300:340])
        client.wait_all(client.submit_many("digits", xs, variant="fp16"), timeout=60)
        client.wait_all(client.submit_many("digits", xs[:10], variant="fp16"), timeout=60)  # 10 cache hits
        labels = (("model", "digits"), ("variant", "fp16"))
        # The worker records a batch's metrics just after storing its results: poll.
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
            }
            key = ("inferq_processing_seconds_count", tuple(sorted(labels)))
            if samples.get(key) == 40 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        w.stop()

    def value(name: str, extra: tuple[tuple[str, str], ...] = ()) -> float:
        return samples[(name, tuple(sorted(labels + extra)))]

    assert value("inferq_queue_seconds_count") == 40
    assert value("inferq_processing_seconds_count") == 40
    assert value("inferq_batch_wait_seconds_count") == 40
    assert value("inferq_batch_size_sum") == 40
    assert value("inferq_compute_seconds_count") >= 1
    assert value("inferq_jobs_total", (("status", "success"),)) == 40
    assert value("inferq_cache_hits_total") >= 10
    assert value("inferq_cache_misses_total") >= 40


def test_status_shows_depth_rate_and_recent_latency_per_model(
    digits_worker, settings: Settings, client: Client
) -> None:
    client.wait_all(client.submit_many("digits", unique(heldout(settings)[:60]), variant="fp32"), timeout=60)
    time.sleep(6)  # one heartbeat
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "status", "--json"],
        env={**os.environ, **settings.env()}, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    doc = json.loads(proc.stdout)["models"]["digits:fp32"]
    assert doc["depth"] == 0 and doc["workers"] >= 1
    assert doc["jobs_s"] > 0
    assert 0 <= doc["queue_p50_ms"] <= doc["queue_p99_ms"]
    assert 0 < doc["processing_p50_ms"] <= doc["processing_p99_ms"]


def test_sigterm_finishes_the_batch_in_hand_and_requeues_the_rest(
    settings: Settings, client: Client, tmp_path: Path, fp16_worker_after
) -> None:
    base = unique(np.concatenate([heldout(settings)] * 6)[:2000])
    xs = (base + np.arange(2000, dtype=np.float32)[:, None, None, None] * 1e-5).astype(np.float32)
    jobs = client.submit_many("digits", xs, variant="fp16", chunk_size=1)
    broker = redis.Redis.from_url(settings.broker_url)
    w = start_worker(settings, tmp_path, ["digits:fp16"], "--max-batch-size", "16", "--max-wait-ms", "5")
    while queue_depth(broker, "digits", "fp16") > 1500:
        time.sleep(0.005)
    w.stop()  # SIGTERM, waits for exit
    assert w.proc.returncode == 0, w.log_text()[-2000:]
    assert broker.hlen(UNACKED) == 0 and broker.zcard(UNACKED_INDEX) == 0, "buffered jobs were not put back"
    done = sum(client.status(j.id).value == "success" for j in jobs)
    assert 0 < done < 2000
    assert done + queue_depth(broker, "digits", "fp16") == 2000, "a job was lost or duplicated on shutdown"
    fp16_worker_after.append(start_worker(settings, tmp_path, ["digits:fp16"]))
    assert all(not isinstance(r, Exception) for r in client.wait_all(jobs, timeout=120))
