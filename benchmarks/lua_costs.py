"""What a byte and a call cost inside a Redis Lua script: the unit the batch store is made of.

    .venv/bin/python benchmarks/lua_costs.py [--calls 300] [--items 256] [--record-bytes 560]

Every result a worker stores goes through ``store.lua`` (workers/serving/store.py): its
record travels in the script's arguments, becomes a Lua string, and is written with
``SET ... EX`` and ``PUBLISH`` from inside the script (the script checks for a cancel
first, atomically). Until the eleventh session the records came as one msgpack array,
unpacked in the script: each record's bytes were made a Lua string twice. In a bulk run Redis's scripts use more
of its CPU than the commands they call (``INFO commandstats``: ~12 µs per input under
``evalsha``, ~5 of them in the commands). This prints, on a private ``redis-server``,
Redis's own time per call (``INFO commandstats``, so no client cost is counted):

- an ``EVALSHA`` of ``return 1`` given one argument of N bytes, per byte: what moving
  bytes into a script costs, against a plain ``SET`` of the same bytes;
- scripts that do one step more each over ``--items`` records of ``--record-bytes``
  (a digits result's record is ~560), given as one msgpack array (the old form): unpack
  the ids, unpack the records, build the keys, ``SET ... EX`` each, ``PUBLISH`` each;
  per item, so each step's cost is the difference from the line above it;
- the last script again with the records one argument each (``store.lua``'s form now).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

import msgpack
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.system_bench import cpu_name  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402

#: The scripts, one ``.lua`` file each (``lua_costs/``): each step does what the one
#: before it does, and one thing more.
SCRIPTS = Path(__file__).with_name("lua_costs")
STEPS = (
    ("script called, both arguments passed", "1_called"),
    ("+ ids unpacked", "2_ids"),
    ("+ records unpacked", "3_records"),
    ("+ a key built per item", "4_keys"),
    ("+ SET ... EX per item", "5_set"),
    ("+ PUBLISH per item", "6_publish"),
)


def script_text(name: str) -> str:
    return (SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")


def server_us(r: redis.Redis[bytes], command: str) -> float:
    """Redis's own µs per call of ``command`` since the last ``CONFIG RESETSTAT``."""
    stats = r.info("commandstats").get(f"cmdstat_{command}")
    return float(stats["usec"]) / max(1, int(stats["calls"])) if stats else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--items", type=int, default=256, help="records per script call (a batch)")
    ap.add_argument("--record-bytes", type=int, default=560, help="bytes per record (digits: ~560)")
    args = ap.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {args.calls} calls each")
    with LocalRedis() as server:
        r = redis.Redis.from_url(server.url)
        print("| one argument of | Redis µs per EVALSHA of `return 1` | ns per byte | plain SET of it, µs |")
        print("|---|---|---|---|")
        noop = r.register_script("return 1")
        for size in (1_000, 10_000, 143_360, 500_000):
            blob = b"x" * size
            r.config_resetstat()
            for _ in range(args.calls):
                noop(keys=[], args=[blob])
            call_us = server_us(r, "evalsha")
            r.config_resetstat()
            for _ in range(args.calls):
                r.set("plain", blob)
            print(f"| {size:,} B | {call_us:.1f} | {call_us * 1e3 / size:.2f} | {server_us(r, 'set'):.1f} |")
        r.delete("plain")

        ids = [uuid.uuid4().hex for _ in range(args.items)]
        record = b"r" * args.record_bytes
        packed = [msgpack.packb(ids), msgpack.packb([record] * args.items, use_bin_type=False)]
        print()
        print(
            f"| {args.items} items of {args.record_bytes} B per call | Redis µs per item | this step, µs per item |"
        )
        print("|---|---|---|")
        before = 0.0
        for name, file in STEPS:
            script = r.register_script(script_text(file))
            r.config_resetstat()
            for _ in range(args.calls):
                script(keys=[], args=packed)
            per_item = server_us(r, "evalsha") / args.items
            print(f"| {name} | {per_item:.2f} | {per_item - before:+.2f} |")
            before = per_item
        script = r.register_script(script_text("per_argument"))
        r.config_resetstat()
        for _ in range(args.calls):
            script(keys=[], args=[packed[0], *([record] * args.items)])
        per_item = server_us(r, "evalsha") / args.items
        print(
            f"| the same, each record its own argument (store.lua's form) | {per_item:.2f} | {per_item - before:+.2f} |"
        )
        r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
