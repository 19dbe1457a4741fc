"""A huge message or stored input is refused without the worker ever holding its bytes.

A plain Celery client can put anything on a model queue. A 200 MB message used to go
whole into the worker (decoded, base64-decoded, unpacked: 2.7 GB peak RSS). Now the
fetcher's Lua call swaps anything over ``INFERQ_MAX_MESSAGE_BYTES`` for a stub in
Redis, and stored inputs over the payload limit are measured, not read. The worker's
peak RSS is read from ``/proc/PID/status`` (``VmHWM``), reset before each send.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
from celery import Celery

from producers.client import Client
from tasks.constants import INPUT_KEY_PREFIX, PREDICT_TASK
from tasks.errors import PayloadTooLarge
from tasks.keys import queue_name
from tasks.kombu_layout import UNACKED, queue_lists
from tasks.settings import Settings
from tasks.wire import BulkTensor
from tests.conftest import WorkerProcess
from workers.broker.envelope import parse_message

pytestmark = pytest.mark.integration

MIB = 1 << 20
#: What the worker's peak RSS may grow by while it refuses the input: its own
#: bookkeeping, never the input's bytes.
ALLOWED_GROWTH = 64 * MIB


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def reset_peak(pid: int) -> int:
    """Reset the kernel's peak-RSS mark (``clear_refs`` 5) and return the current peak."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return peak_rss(pid)


def plain_celery(settings: Settings) -> Celery:
    app = Celery("plain", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(task_serializer="msgpack", accept_content=["json"], result_accept_content=["json"])
    return app


def then_a_good_job_succeeds(client: Client, worker: WorkerProcess, models_dir: Path) -> None:
    assert worker.alive, worker.log_text()[-3000:]
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[0]
    assert client.submit("digits", x, variant="fp32", no_cache=True).wait(timeout=30).outputs[
        "probs"
    ].shape == (10,)


def test_a_200_mb_message_from_a_plain_celery_client_is_refused_without_the_worker_holding_it(
    settings: Settings, client: Client, digits_worker: WorkerProcess, models_dir: Path
) -> None:
    then_a_good_job_succeeds(client, digits_worker, models_dir)  # warm: its buffers are allocated
    image = {"dtype": "float32", "shape": [50 * MIB, 1], "data": bytes(200 * MIB)}
    request = {"model": "digits", "variant": "fp32", "inputs": msgpack.packb({"image": image})}
    before = reset_peak(digits_worker.proc.pid)
    jid = "huge-" + uuid.uuid4().hex
    plain_celery(settings).send_task(
        PREDICT_TASK, args=[request], task_id=jid, queue=queue_name("digits", "fp32")
    )
    with pytest.raises(
        PayloadTooLarge, match=r"message is \d{9} bytes, over the worker's limit of 33554432 bytes"
    ):
        client.result(jid, wait=True, timeout=60)
    grew = peak_rss(digits_worker.proc.pid) - before
    print(f"200 MB message refused; the worker's peak RSS grew by {grew / MIB:.1f} MiB")
    assert grew < ALLOWED_GROWTH, f"the worker's peak RSS grew by {grew / MIB:.0f} MiB"
    # The worker stores the answer, then acknowledges: the ack follows the result by a moment.
    deadline = time.monotonic() + 10
    while client.broker.hlen(UNACKED) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.broker.hlen(UNACKED) == 0, "the stub was acknowledged like any answered job"
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_a_stored_input_over_the_payload_limit_is_measured_not_read(
    settings: Settings, client: Client, digits_worker: WorkerProcess, models_dir: Path
) -> None:
    ref = f"{INPUT_KEY_PREFIX}{uuid.uuid4().hex}"
    client.backend.set(ref, bytes(settings.max_payload_bytes + MIB), ex=60)
    before = reset_peak(digits_worker.proc.pid)
    jid = "huge-ref-" + uuid.uuid4().hex
    request = {"model": "digits", "variant": "fp32", "inputs_ref": ref}
    plain_celery(settings).send_task(
        PREDICT_TASK, args=[request], task_id=jid, queue=queue_name("digits", "fp32")
    )
    with pytest.raises(PayloadTooLarge, match=rf"input payload is {settings.max_payload_bytes + MIB} bytes"):
        client.result(jid, wait=True, timeout=60)
    grew = peak_rss(digits_worker.proc.pid) - before
    print(
        f"stored input of {settings.max_payload_bytes + MIB} bytes refused; peak RSS grew by {grew / MIB:.1f} MiB"
    )
    assert grew < 8 * MIB, f"the worker's peak RSS grew by {grew / MIB:.0f} MiB"
    then_a_good_job_succeeds(client, digits_worker, models_dir)


def test_the_client_keeps_its_bulk_messages_under_the_workers_message_limit(
    settings: Settings, models_dir: Path
) -> None:
    """A bulk chunk's stacked inputs are split over as many messages as the workers'
    message limit needs (tensors inline, or beside the message past 32 KiB)."""
    limit = 64 * 1024
    xs = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[:64] + np.float32(uuid.uuid4().int % 997)
    small = settings.with_(max_message_bytes=limit)
    with Client(small) as client:
        queue = queue_name("digits", "fp16")  # no worker serves it: the messages stay
        lists = queue_lists(queue)
        before = {lst: client.broker.llen(lst) for lst in lists}
        client.submit_many("digits", xs, variant="fp16", chunk_size=64, no_cache=True)
        raws = [
            client.broker.lpop(lst)  # not for any later test
            for lst in lists
            for _ in range(client.broker.llen(lst) - before[lst])
        ]
        bulks = [parse_message(raw) for raw in raws]
    assert len(raws) > 1 and all(len(raw) <= limit for raw in raws), [len(r) for r in raws]
    assert all(isinstance(b, BulkTensor) for b in bulks)
    assert sum(len(b.ids) for b in bulks if isinstance(b, BulkTensor)) == 64
    assert all(isinstance(b.tensors, dict) and b.tensors for b in bulks if isinstance(b, BulkTensor))
