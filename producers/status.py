"""``inferq status``: workers online, models they serve, queue depths."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from producers.client import Client
from tasks import constants as C
from tasks.keys import queue_name


def collect(client: Client) -> dict[str, Any]:
    now = time.time()
    workers = []
    for raw in client.backend.hgetall(C.WORKERS_KEY).values():
        doc = json.loads(raw)
        if now - float(doc.get("seen_at", 0)) <= 3 * C.WORKER_HEARTBEAT_S:
            workers.append(doc)
    broker = redis.Redis.from_url(client.settings.broker_url)
    try:
        queues = {}
        for key, info in sorted(client.models(refresh=True).items()):
            q = queue_name(info.name, info.variant)
            queues[key] = {"queue": q, "depth": int(broker.llen(q)), "version": info.version}
    finally:
        broker.close()
    return {
        "broker": client.settings.public()["broker_url"],
        "result_backend": client.settings.public()["result_backend"],
        "workers": sorted(workers, key=lambda w: w["hostname"]),
        "models": queues,
    }


def print_status(client: Client, *, as_json: bool) -> int:
    doc = collect(client)
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"broker {doc['broker']}  results {doc['result_backend']}")
    print(f"workers online: {len(doc['workers'])}")
    for w in doc["workers"]:
        print(
            f"  {w['hostname']}  pid {w['pid']}  rss {w.get('rss_bytes', 0) / 2**20:.0f} MiB  "
            f"ok {w.get('succeeded', 0)}  failed {w.get('failed', 0)}  models {','.join(w['models'])}"
        )
    print(f"{'model':<28} {'queue':<32} {'depth':>7}")
    for key, q in doc["models"].items():
        print(f"{key:<28} {q['queue']:<32} {q['depth']:>7}")
    return 0


def wait_for_workers(
    client: Client, models: list[str], timeout: float = 120.0, count: int = 1
) -> list[dict[str, Any]]:
    """Block until ``count`` live workers serve all of ``models`` (``name:variant`` keys)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [w for w in collect(client)["workers"] if set(models) <= set(w["models"])]
        if len(ready) >= count:
            return ready
        time.sleep(0.2)
    from tasks.errors import Timeout

    raise Timeout(f"no worker serving {models} came up within {timeout:.0f} s")
