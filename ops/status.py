"""``inferq status``: workers online, models they serve, queue depths."""

from __future__ import annotations

import json
import time
from typing import Any

from producers.client import Client
from tasks import constants as C
from tasks.connections import redis_client
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists
from tasks.wire import WorkerBeat


def collect(client: Client) -> dict[str, Any]:
    now = time.time()
    workers = []
    for raw in client.backend.hgetall(C.WORKERS_KEY).values():
        beat = WorkerBeat.parse(raw)
        if beat is not None and beat.alive(now):
            workers.append(beat.to_dict())
    broker = redis_client(client.settings.broker_url, client.settings)
    try:
        queues = {}
        for key, info in sorted(client.models(refresh=True).items()):
            q = queue_name(info.name, info.variant)
            pipe = broker.pipeline(transaction=False)
            for lst in queue_lists(q):
                pipe.llen(lst)
            recent = [w["recent"][key] for w in workers if key in (w.get("recent") or {})]
            queues[key] = {
                "queue": q,
                "depth": int(sum(pipe.execute())),
                "version": info.version,
                "workers": sum(key in w["models"] for w in workers),
                # Over the workers' last minute; percentiles are the worst worker's.
                "jobs_s": sum(r["jobs_s"] for r in recent),
                **{
                    f: max((r[f] for r in recent), default=None)
                    for f in ("queue_p50_ms", "queue_p99_ms", "processing_p50_ms", "processing_p99_ms")
                },
            }
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
    print(
        f"{'model':<26} {'queue':<30} {'depth':>7} {'workers':>7} {'jobs/s':>8} "
        f"{'queue p50/p99 ms':>18} {'processing p50/p99 ms':>22}"
    )
    for key, q in doc["models"].items():
        lat = (
            f"{_ms(q['queue_p50_ms'])}/{_ms(q['queue_p99_ms'])}",
            f"{_ms(q['processing_p50_ms'])}/{_ms(q['processing_p99_ms'])}",
        )
        print(
            f"{key:<26} {q['queue']:<30} {q['depth']:>7} {q['workers']:>7} {q['jobs_s']:>8.1f} {lat[0]:>18} {lat[1]:>22}"
        )
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def wait_for_workers(
    client: Client, models: list[str], timeout: float = 120.0, count: int = 1, hostname: str | None = None
) -> list[dict[str, Any]]:
    """Block until ``count`` live workers (or the one named ``hostname``) serve all of ``models``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [
            w
            for w in collect(client)["workers"]
            if set(models) <= set(w["models"]) and (hostname is None or w["hostname"] == hostname)
        ]
        if len(ready) >= count:
            return ready
        time.sleep(0.2)
    from tasks.errors import Timeout

    raise Timeout(f"no worker serving {models} came up within {timeout:.0f} s")
