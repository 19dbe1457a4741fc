"""``inferq status``: workers online, and every model queue with its depth and who serves it.

Every model queue is listed, served or not: those of announced models (kept after their
workers stop) and every queue list in the broker (``ops/model_queues.py``). A queue that
holds jobs while no live worker serves it is the one an operator must see first, so the
table says so instead of leaving it out.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ops.model_queues import ModelQueues, model_key_of
from producers.client import Client
from producers.health import live_beats
from tasks import constants as C
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists

#: The recent-latency fields each worker's heartbeat carries, shown per model.
LATENCIES = ("queue_p50_ms", "queue_p99_ms", "processing_p50_ms", "processing_p99_ms")


def collect(client: Client) -> dict[str, Any]:
    """The status document (``--json``), read within the client's call bound: Redis that
    does not answer is ``BrokerUnavailable``, a refused password ``ConfigError``."""
    return client.bound.run("reading the status", lambda: _read(client), client.bound.deadline(None))


def _read(client: Client) -> dict[str, Any]:
    workers = [b.to_dict() for b in live_beats(client.backend.hgetall(C.WORKERS_KEY), time.time())]
    announced = client.catalog.models(refresh=True)
    queues = {queue_name(i.name, i.variant) for i in announced.values()}
    queues |= ModelQueues(client.broker, client.backend).in_broker()
    ordered = sorted(queues, key=model_key_of)
    pipe = client.broker.pipeline(transaction=False)
    for q in ordered:
        for lst in queue_lists(q):
            pipe.llen(lst)
    replies = iter(pipe.execute())
    models = {}
    for q in ordered:
        key = model_key_of(q)
        depth = sum(int(next(replies)) for _ in queue_lists(q))
        info = announced.get(key)
        recent = [w["recent"][key] for w in workers if key in (w.get("recent") or {})]
        serving = sum(key in w["models"] for w in workers)
        models[key] = {
            "queue": q,
            "depth": depth,
            "version": info.version if info is not None else None,
            "workers": serving,
            "served": serving > 0,
            # Over the workers' last minute; percentiles are the worst worker's.
            "jobs_s": sum(r["jobs_s"] for r in recent),
            **{f: max((r[f] for r in recent), default=None) for f in LATENCIES},
        }
    public = client.settings.public()
    return {
        "broker": public["broker_url"],
        "result_backend": public["result_backend"],
        "workers": sorted(workers, key=lambda w: w["hostname"]),
        "models": models,
    }


def print_status(client: Client, *, as_json: bool) -> int:
    doc = collect(client)
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"broker {doc['broker']}  results {doc['result_backend']}")
    print(f"workers online: {len(doc['workers'])}")
    for w in doc["workers"]:
        metrics = f"  metrics :{w['metrics_port']}" if w.get("metrics_port") else ""
        print(
            f"  {w['hostname']}  pid {w['pid']}  rss {w.get('rss_bytes', 0) / 2**20:.0f} MiB  "
            f"ok {w.get('succeeded', 0)}  failed {w.get('failed', 0)}  models {','.join(w['models'])}{metrics}"
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
        note = "" if q["served"] else "  no live worker serves it"
        print(
            f"{key:<26} {q['queue']:<30} {q['depth']:>7} {q['workers']:>7} {q['jobs_s']:>8.1f} "
            f"{lat[0]:>18} {lat[1]:>22}{note}"
        )
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def live_workers(client: Client) -> list[dict[str, Any]]:
    """The live workers' heartbeats (``collect(client)["workers"]`` in one read, without the queues)."""
    raw = client.bound.run(
        "reading worker heartbeats",
        lambda: client.backend.hgetall(C.WORKERS_KEY),
        client.bound.deadline(None),
    )
    return [b.to_dict() for b in live_beats(raw)]


def wait_for_workers(
    client: Client, models: list[str], timeout: float = 120.0, count: int = 1, hostname: str | None = None
) -> list[dict[str, Any]]:
    """Block until ``count`` live workers (or the one named ``hostname``) serve all of ``models``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [
            w
            for w in live_workers(client)
            if set(models) <= set(w["models"]) and (hostname is None or w["hostname"] == hostname)
        ]
        if len(ready) >= count:
            return ready
        time.sleep(0.2)
    from tasks.errors import Timeout

    raise Timeout(f"no worker serving {models} came up within {timeout:.0f} s")
