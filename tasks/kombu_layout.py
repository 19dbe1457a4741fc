"""kombu's private Redis layout, the one place inferq knows it.

inferq's worker reads the model queues itself (an atomic Lua fetch, leases, a graceful
put-back), so it must write exactly what kombu's Redis transport writes, or kombu's own
sweep, Flower's queue depths and a plain Celery worker would misread it:

- a queue is one Redis list per priority step: ``queue``, ``queue\\x06\\x163``, ...;
  kombu pushes on the left and pops on the right;
- a delivered, unacknowledged message is an entry of the ``unacked`` hash (delivery tag
  -> ``[message, exchange, routing_key]`` as JSON) and of the ``unacked_index`` sorted
  set (delivery tag, scored by delivery time);
- the delivery tag and routing key live in the envelope's ``properties``.

None of this is kombu's public API. ``tests/integration/test_kombu_layout.py`` pins every name
and format here against the installed kombu (including a real ``QoS.append`` on a real
Redis), so an upgrade that changes them fails a test, not production. The Lua side of
the same layout is ``tasks/lua/fetch.lua`` and ``take_back.lua``, which take these
names as ``KEYS``.

Transport options that would move these keys (``global_keyprefix``, ``sep``,
``unacked_key``...) are refused at start-up by ``check_transport_options``: inferq's
Lua scripts and Flower's queue view would look in the wrong place.
"""

from __future__ import annotations

import bisect
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tasks.constants import QUEUE_PREFIX
from tasks.errors import ConfigError

#: kombu's ``Channel.unacked_key`` and ``Channel.unacked_index_key``.
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

#: kombu's Redis transport keeps a queue's messages in one list per priority step:
#: ``queue`` (0, served first), then ``queue\x06\x163``, ``\x06\x166``, ``\x06\x169``.
#: (kombu's defaults; inferq also passes them explicitly, so Flower's depths count the
#: same lists.)
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"

#: Transport options that move or rename the keys above; inferq refuses them.
UNSUPPORTED_OPTIONS = {
    "global_keyprefix": "prefixes every key kombu writes, but not the keys inferq's Lua scripts use",
    "sep": "renames the priority lists",
    "priority_steps": "renames the priority lists",
    "unacked_key": "moves the unacknowledged-message hash",
    "unacked_index_key": "moves the unacknowledged-message index",
}


def queue_lists(queue: str) -> list[str]:
    """The Redis lists behind a queue, in the order kombu serves them (by priority)."""
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def list_for(queue: str, priority: object) -> str:
    """The list kombu keeps ``queue``'s messages of ``priority`` in (rounded down to a step)."""
    try:
        pri = min(max(int(priority), 0), 9)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        pri = 0
    step = PRIORITY_STEPS[bisect.bisect(PRIORITY_STEPS, pri) - 1]
    return queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"


def encode_unacked_entry(message: Mapping[str, Any], exchange: str, routing_key: str) -> str:
    """An ``unacked`` hash value, as kombu's ``QoS.append`` writes it."""
    return json.dumps([message, exchange, routing_key])


def decode_unacked_entry(raw: bytes | str) -> tuple[dict[str, Any], str, str]:
    """``(message, exchange, routing_key)`` of an ``unacked`` hash value.

    Raises ``ValueError`` for a value that is not one (another tool's entry).
    """
    entry = json.loads(raw)
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], dict)):
        raise ValueError("not a kombu unacked entry")
    message, exchange, routing_key = entry
    if not isinstance(exchange, str) or not isinstance(routing_key, str):
        raise ValueError("not a kombu unacked entry")
    return message, exchange, routing_key


def redelivery(message: dict[str, Any], routing_key: str) -> tuple[str, str]:
    """A taken-back message as kombu's restore would requeue it: marked ``redelivered``,
    under a new delivery tag (so a worker that was only cut off, and comes back to ack
    the old tag, cannot touch the new delivery's record); returns ``(list, message JSON)``.

    Raises ``KeyError``/``TypeError``/``AttributeError`` for a message without kombu's
    ``properties``.
    """
    message.setdefault("headers", {})["redelivered"] = True
    properties = message["properties"]
    properties["delivery_tag"] = str(uuid.uuid4())
    return list_for(routing_key, properties.get("priority")), json.dumps(message)


def delivery_fields(message: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(delivery_tag, exchange, routing_key)`` of a kombu envelope; empty when absent."""
    props = message.get("properties")
    props = props if isinstance(props, dict) else {}
    info = props.get("delivery_info")
    info = info if isinstance(info, dict) else {}
    return (
        str(props.get("delivery_tag") or ""),
        str(info.get("exchange") or ""),
        str(info.get("routing_key") or ""),
    )


def check_transport_options(options: Mapping[str, Any], broker_url: str = "") -> None:
    """Refuse transport options (set in Celery's config or in the broker URL's query)
    that move kombu's keys away from where inferq reads them; ours are accepted."""
    query = parse_qs(urlsplit(broker_url).query, keep_blank_values=True) if broker_url else {}
    ours: dict[str, Any] = {
        "global_keyprefix": "",
        "sep": PRIORITY_SEP,
        "priority_steps": list(PRIORITY_STEPS),
        "unacked_key": UNACKED,
        "unacked_index_key": UNACKED_INDEX,
    }
    for source, opts in (("broker_transport_options", options), ("the broker URL", query)):
        for name, why in UNSUPPORTED_OPTIONS.items():
            if name not in opts:
                continue
            value = opts[name]
            if isinstance(value, list) and len(value) == 1 and source == "the broker URL":
                value = value[0]  # parse_qs gives a list per name
            if _same(value, ours[name]):
                continue
            raise ConfigError(
                f"transport option {name}={value!r} in {source} is not supported by inferq: it {why}. "
                "Use a separate Redis database (redis://host:6379/N) to keep apps apart instead"
            )


def _same(value: Any, ours: Any) -> bool:
    if isinstance(ours, list):
        try:
            return [int(v) for v in value] == ours
        except (TypeError, ValueError):
            return False
    return bool(value == ours)


def is_model_queue(name: str) -> bool:
    """``inferq.<model>.<variant>``, not a worker's control queue (``inferq.worker.<host>``)."""
    parts = name.split(".")
    return len(parts) == 3 and parts[0] == QUEUE_PREFIX and parts[1] != "worker"
