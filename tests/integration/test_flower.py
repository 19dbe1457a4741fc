"""Flower, started by ``inferq flower``, sees our jobs and asks for a password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import free_port
from producers.client import Client
from tasks.settings import Settings
from tests.conftest import ROOT
from tests.helpers.flower import get

pytestmark = pytest.mark.integration


@pytest.fixture()
def flower(settings: Settings, tmp_path: Path):
    s = settings.with_(flower_port=free_port(), flower_password="s3cret-pw")
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "flower"],
        env={**os.environ, **s.env()}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{s.flower_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(base + "/healthcheck", None)[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    yield base, s
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    assert "s3cret-pw" not in (tmp_path / "flower.log").read_text()


def test_flower_requires_basic_auth_and_sees_every_single_batched_and_bulk_job(
    flower, digits_worker, client: Client, settings: Settings
) -> None:
    base, s = flower
    assert get(base + "/api/tasks", None)[0] == 401
    assert get(base + "/api/tasks", (s.flower_user, "wrong"))[0] == 401
    time.sleep(1.0)  # let Flower subscribe to the event stream
    x = np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")
    singles = [client.submit("digits", xi, variant="int8", no_cache=True) for xi in x[:5]]
    bulk = client.submit_many("digits", x[5:45], variant="int8", chunk_size=16, no_cache=True)
    jobs = [*singles, *bulk]
    results = client.wait_all(jobs, timeout=30)
    assert max(r.timing.batch_size for r in results) > 1  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline:
        status, body = get(base + "/api/tasks?limit=1000", (s.flower_user, s.flower_password))
        assert status == 200
        seen = json.loads(body)
        if all(seen.get(j.id, {}).get("state") == "SUCCESS" for j in jobs):
            break
        time.sleep(0.5)
    for j in jobs:
        assert seen.get(j.id, {}).get("state") == "SUCCESS", f"Flower did not see {j.id} succeed"
        assert seen[j.id]["runtime"] is not None
        # A bulk job's one event says what task-received would have: Flower lists its name
        # and when it was received.
        assert seen[j.id]["name"] == "inferq.predict" and seen[j.id]["received"] is not None
