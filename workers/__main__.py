"""``python -m workers [--models ...]``: one worker, as ``inferq worker`` runs it.

``inferq worker --concurrency N`` starts N of these (``workers/boot/start.py``
``supervise``), so a worker process needs nothing from the operator tools.
"""

from __future__ import annotations

import argparse
import sys

from redis.exceptions import ConnectionError as RedisConnectionError

from tasks.errors import InferqError
from tasks.settings import Settings, redact_url
from workers.boot.cli import add_worker_arguments, cmd_worker


def main(argv: list[str] | None = None) -> int:
    parser = add_worker_arguments(argparse.ArgumentParser(prog="python -m workers"))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(threads=args.threads, concurrency=args.concurrency)
    except InferqError as exc:
        print(f"inferq worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        return cmd_worker(args, settings)
    except InferqError as exc:
        print(f"inferq worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except RedisConnectionError as exc:  # includes a wrong password; URLs shown without it
        print(f"inferq worker: cannot use Redis at {redact_url(settings.broker_url)}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
