"""A client meeting records of another inferq version: reported, never misread or destroyed."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from ops.local.redis_server import LocalRedis
from producers.client import Client
from tasks.errors import IncompatibleVersion
from tasks.keys import job_id, queue_name, result_key
from tasks.kombu_layout import queue_lists
from tasks.settings import Settings
from tests.helpers.announced import announce, tiny_model

pytestmark = pytest.mark.integration

INFO = tiny_model("vers", width=3, version="7")


@pytest.fixture()
def client(own_redis: LocalRedis, tmp_path) -> Iterator[Client]:
    settings = Settings(broker_url=own_redis.url, models_dir=tmp_path)
    with Client(settings) as c:
        announce(c.backend, INFO)
        yield c


def test_a_newer_versions_record_is_reported_not_deleted_or_recomputed(client: Client):
    x = np.arange(3, dtype=np.float32)
    jid = job_id(INFO.name, INFO.variant, INFO.version, {"x": x})
    newer = orjson.dumps({"status": "SUCCESS", "result": {"v": 2, "outputs": {}}, "task_id": jid, "v": 2})
    client.backend.set(result_key(jid), newer)
    job = client.submit("vers", x, variant="fp32")
    assert job.done and not job.enqueued and not job.cached
    with pytest.raises(IncompatibleVersion, match="wire version 2; this client reads version 1"):
        job.wait(timeout=5)
    assert client.backend.get(result_key(jid)) == newer, "another version's record must be left alone"
    assert sum(client.broker.llen(lst) for lst in queue_lists(queue_name("vers", "fp32"))) == 0
