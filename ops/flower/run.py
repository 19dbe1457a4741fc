"""``inferq flower``: Flower on inferq's own Celery app, behind basic auth."""

from __future__ import annotations

import argparse
import errno
import socket

from tasks.errors import ConfigError
from tasks.settings import Settings

#: How long Flower's start may wait for each Redis to answer before the command fails. Flower
#: itself retries a missing broker forever, with a growing pause and no error.
REDIS_CHECK_S = 2.0


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    """Run Flower with basic auth on inferq's own Celery app.

    Flower gets the app, not just URLs, so its broker connections use the same TLS
    options and timeouts as everything else (``tasks/connections.py``), and its
    remote control speaks JSON (``tasks.app.JsonControl``: the worker pages decode
    every reply). Its options are passed in memory: the password is on no command
    line that ``ps`` shows. The broker page lists every model queue, served or not
    (``ops/flower/queues.py``).

    Before Flower starts, everything it would fail on later is checked, so each is one
    line at once: the flower extra (imported first), both Redis (Flower would retry a
    dead broker forever), and the port (Flower would end in a traceback).
    """
    from ops.flower import queues as flower_queues
    from tasks.app import create_app

    port = args.port or settings.flower_port
    check_redis(settings)
    check_port_free(settings.flower_address, port)
    password = settings.flower_password
    if not password:
        import secrets

        password = secrets.token_urlsafe(12)
        print(f"INFERQ_FLOWER_PASSWORD is not set; this run's password: {password}", flush=True)
    print(f"Flower: http://{settings.flower_address}:{port}  (user {settings.flower_user})", flush=True)
    flower_queues.install(settings)
    argv = [
        "flower",
        f"--address={settings.flower_address}",
        f"--port={port}",
        f"--basic-auth={settings.flower_user}:{password}",
    ]
    try:
        return int(create_app(settings).start(argv) or 0)
    except OSError as exc:  # the port taken between the check and Flower's own bind
        raise port_error(settings.flower_address, port, exc) from None


def check_redis(settings: Settings) -> None:
    """``BrokerUnavailable`` (or ``ConfigError`` for a refused password) unless both Redis
    answer within ``REDIS_CHECK_S``; the same one-line errors every other command gives."""
    from producers.bounded import IO_ERRORS, translate
    from tasks.connections import redis_client
    from tasks.settings import redact_url

    for name, url in (("broker", settings.broker_url), ("result backend", settings.result_backend)):
        client = redis_client(url, settings, socket_timeout=REDIS_CHECK_S, retries=0)
        try:
            client.ping()
        except IO_ERRORS as exc:
            raise translate(exc, f"starting Flower: reaching the {name}", redact_url(url)) from None
        finally:
            client.close()


def check_port_free(address: str, port: int) -> None:
    """``ConfigError`` naming the port when something already listens on it."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        # As Tornado binds: SO_REUSEADDR, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise port_error(address, port, exc) from None


def port_error(address: str, port: int, exc: OSError) -> ConfigError:
    why = "something else listens on it" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return ConfigError(
        f"Flower cannot listen on {address}:{port}: {why}; choose another with --port (or INFERQ_FLOWER_PORT)"
    )
