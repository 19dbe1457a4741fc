"""A real ``inferq flower`` process for the tests, and plain HTTP with basic auth."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ops.local.processes import die_with_parent, stop_process
from ops.local.redis_server import free_port
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-pw"


def get(url: str, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    """GET ``url``: status and body (an HTTP error's body is dropped)."""
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


class FlowerProcess:
    """``python -m ops.cli flower`` on a free port, password set, log in a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings.with_(flower_port=free_port(), flower_password=PASSWORD)
        self.base = f"http://127.0.0.1:{self.settings.flower_port}"
        self.auth = (self.settings.flower_user, PASSWORD)
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "flower"],
            env={**os.environ, **self.settings.env()},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if get(self.base + "/healthcheck", None)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"Flower did not come up: {log.read_text(errors='replace')[-3000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        return get(self.base + path, self.auth)

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"GET {path}: HTTP {status}"
        return json.loads(body)

    def queue_depths(self) -> dict[str, int]:
        """``/api/queues/length`` as ``{queue: messages}``."""
        return {q["name"]: q["messages"] for q in self.get_json("/api/queues/length")["active_queues"]}

    def worker_path(self, hostname: str) -> str:
        return "/worker/" + quote(hostname, safe="@")

    def wait_worker_online(self, hostname: str, timeout: float = 60) -> None:
        """Until Flower's dashboard has the worker online: its event stream is then
        live, so jobs submitted from now on are seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.get_json("/workers?json=1")["data"]
            if any(w.get("hostname") == hostname and w.get("status") for w in rows):
                return
            time.sleep(0.5)
        raise AssertionError(f"Flower never listed {hostname} online")

    def stop(self) -> str:
        """Stop Flower; its log, which must never hold the password."""
        stop_process(self.proc, grace_s=20)
        self._fh.close()
        text = self.log.read_text(errors="replace")
        assert PASSWORD not in text
        return text
