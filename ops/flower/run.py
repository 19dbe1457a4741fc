"""``inferq flower``: Flower on inferq's own Celery app, behind basic auth."""

from __future__ import annotations

import argparse

from tasks.settings import Settings


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    """Run Flower with basic auth on inferq's own Celery app.

    Flower gets the app, not just URLs, so its broker connections use the same TLS
    options and timeouts as everything else (``tasks/connections.py``), and its
    remote control speaks JSON (``tasks.app.JsonControl``: the worker pages decode
    every reply). Its options are passed in memory: the password is on no command
    line that ``ps`` shows. The broker page lists every model queue, served or not
    (``ops/flower/queues.py``).
    """
    from ops.flower import queues as flower_queues
    from tasks.app import create_app

    password = settings.flower_password
    if not password:
        import secrets

        password = secrets.token_urlsafe(12)
        print(f"INFERQ_FLOWER_PASSWORD is not set; this run's password: {password}", flush=True)
    port = args.port or settings.flower_port
    print(f"Flower: http://{settings.flower_address}:{port}  (user {settings.flower_user})", flush=True)
    flower_queues.install(settings)
    argv = [
        "flower",
        f"--address={settings.flower_address}",
        f"--port={port}",
        f"--basic-auth={settings.flower_user}:{password}",
    ]
    return int(create_app(settings).start(argv) or 0)
