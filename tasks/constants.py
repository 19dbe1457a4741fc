"""Names and defaults both sides of the queue agree on.

Everything a producer and a worker must spell the same way lives here, so that a
rename is one edit and a reader can see the whole wire vocabulary in one screen.
"""

from __future__ import annotations

#: Celery task name of the inference job. Producers send it by name; only workers
#: register a function for it.
PREDICT_TASK = "inferq.predict"

#: Version of the request/result payload layout. Bumped on incompatible changes.
WIRE_VERSION = 1

#: Queue names are ``inferq.<model>.<variant>``: a worker subscribes to the variants it
#: loaded, so a job never lands on a worker that cannot run it.
QUEUE_PREFIX = "inferq"

#: (The Redis lists behind a queue, one per priority step, are kombu's layout:
#: ``tasks/kombu_layout.py``.)

#: The client's job priorities, as kombu priorities (lower is served first). Ordinary
#: jobs are not sent at 0, so that ``high`` has a list to overtake them from; a job a
#: plain Celery client sends without a priority lands in the ``high`` list.
PRIORITIES = {"high": 0, "normal": 3, "low": 6}
DEFAULT_PRIORITY = "normal"

#: Celery's Redis result backend key layout; the result backend doubles as the cache,
#: so the cache key *is* this key for the job's content-hash id.
RESULT_KEY_PREFIX = "celery-task-meta-"

#: Each client's one reply channel is ``REPLY_CHANNEL_PREFIX + <random client id>``, named
#: in its messages' ``reply_to``: a worker publishes there one ``ReplyBatch`` per batch
#: (``tasks/wire/replies.py``). Only channels with this prefix are honoured (a plain
#: Celery client's ``reply_to`` is its RPC queue). A cancel (``cancel.lua``) is also
#: published on ``CANCEL_CHANNEL``, which every client's listener subscribes to beside
#: its reply channel, so a job awaited only on a reply channel still wakes at once.
REPLY_CHANNEL_PREFIX = "inferq:reply:"
CANCEL_CHANNEL = "inferq:cancelled"

#: Marks a job id as queued or running so the same input is not enqueued twice.
INFLIGHT_KEY_PREFIX = "inferq:inflight:"

#: Large inputs travel beside their message, in the broker's Redis, under this prefix
#: (a "claim check"); the message carries the key. Inputs up to the threshold travel
#: inside the message.
INPUT_KEY_PREFIX = "inferq:input:"
INLINE_INPUT_MAX_BYTES = 32 * 1024

#: Hash of model descriptions that workers announce at start-up (field ``model:variant``).
MODELS_KEY = "inferq:models"

#: Hash of cache counters kept by producers: field ``model:variant:hit|miss``.
CACHE_STATS_KEY = "inferq:cache_stats"

#: Hash of worker heartbeats (hostname -> JSON with ``seen_at``) for ``inferq status``.
WORKERS_KEY = "inferq:workers"
WORKER_HEARTBEAT_S = 5.0

# --- defaults (each overridable through Settings / INFERQ_* variables) ---------------

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MODELS_DIR = "models"
#: One day: long enough for a web backend to poll a job, short enough that a cache
#: for changing traffic does not grow without bound.
DEFAULT_CACHE_TTL_S = 86_400
#: 16 MiB: a 1024x1024x4 float32 image fits; anything bigger is almost surely a bug.
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
#: 32 MiB: a message carrying one input at the payload limit inline (base64 in a plain
#: Celery envelope, about 4/3 of its size) fits. A bigger message never leaves Redis
#: whole: the worker sees a stub and answers ``PayloadTooLarge`` (workers/broker/fetcher.py),
#: so a worker holds at most its prefetch times this much message data.
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: The last resort for an unacknowledged message: how long one whose worker stopped
#: renewing it waits before another worker takes it back. Live workers renew every
#: quarter of it (workers/broker/leases.py), so it need not outlast the slowest batch. A
#: dead inferq worker's messages come back much sooner, after its lease
#: (``DEFAULT_LEASE_S``); this covers messages nobody recorded a holder for (taken by an
#: older worker or by a plain Celery worker) and ones a live worker gave up.
DEFAULT_VISIBILITY_TIMEOUT_S = 60
#: A worker's heartbeat lease: its alive key lives this long after each renewal, and it
#: renews five times per lease, so four lost beats in a row are survived. Once the key is
#: gone, any worker takes back the messages it held: a SIGKILLed worker's jobs run
#: elsewhere within about this long plus a second. Shorter means faster recovery but a
#: worker whose beats stall (or whose link to Redis is down) this long loses its messages
#: to others, which then run twice.
DEFAULT_LEASE_S = 5.0
#: Bounded prefetch: a worker holds at most this many unacked messages per process.
DEFAULT_PREFETCH = 4
#: A client call that Redis does not answer within this long raises ``BrokerUnavailable``:
#: long enough for a Redis restart's reconnect, short enough that a web server's threads
#: are not all stuck on a hung Redis.
DEFAULT_CLIENT_TIMEOUT_S = 10.0
#: ``wait`` without a ``timeout`` waits this long at most (``Timeout``): no call is
#: unbounded, and a big batch of slow jobs still fits.
DEFAULT_WAIT_TIMEOUT_S = 300.0

#: A job handle (``Client.handle``) maps to its job id under this prefix.
HANDLE_KEY_PREFIX = "inferq:handle:"
#: The owners (gateway API keys, hashed) holding a handle to a job: a cancel through one
#: owner's handle leaves a job other owners share alone.
OWNERS_KEY_PREFIX = "inferq:owners:"
#: Handles are "h-" and 32 hex digits of a random 128-bit token.
HANDLE_PREFIX = "h-"
DEFAULT_FLOWER_PORT = 5555
DEFAULT_FLOWER_USER = "inferq"
DEFAULT_METRICS_PORT = 9808

#: The HTTP gateway (gateway/): its port, request body limit and synchronous infer wait.
DEFAULT_GATEWAY_PORT = 8000
DEFAULT_GATEWAY_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_GATEWAY_INFER_TIMEOUT_S = 30.0
