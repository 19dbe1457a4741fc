"""``inferq gateway``: the HTTP gateway (``gateway/``) under uvicorn.

Binds 127.0.0.1 unless told otherwise (``--host`` or ``INFERQ_GATEWAY_HOST``): opening
it to a network is a decision, and one to take with API keys (``INFERQ_API_KEYS``).
"""

from __future__ import annotations

import argparse
import logging

from tasks.settings import Settings


def add_gateway_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to bind (default INFERQ_GATEWAY_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default INFERQ_GATEWAY_PORT, 8000)")
    p.add_argument(
        "--workers", dest="gateway_workers", type=int, default=1, help="uvicorn worker processes (default 1)"
    )
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.server import serve  # fastapi and uvicorn: the gateway extra

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.gateway_workers < 1:
        raise SystemExit("inferq gateway: --workers must be >= 1")
    serve(settings, host=args.host, port=args.port, workers=args.gateway_workers, access_log=args.access_log)
    return 0
