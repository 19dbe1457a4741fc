"""Start and stop a private ``redis-server`` (for the demo and the tests).

A private server on a free port keeps us off any Redis we did not start: we never
touch, let alone flush, someone else's data. It can ask for a password and serve TLS
only (``rediss://``), with certificates made here by the ``openssl`` command.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ops.local.processes import die_with_parent, stop_process
from tasks.connections import tls_options, uses_tls
from tasks.errors import ConfigError
from tasks.settings import Settings


@dataclass(frozen=True)
class TlsFiles:
    """A private CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def settings(self, *, client_cert: bool = True) -> dict[str, str]:
        """The ``Settings`` fields for a client that trusts this CA (and presents its certificate)."""
        out = {"redis_ca_certs": str(self.ca)}
        if client_cert:
            out |= {"redis_certfile": str(self.client_cert), "redis_keyfile": str(self.client_key)}
        return out


def make_tls_files(folder: Path, days: int = 2) -> TlsFiles:
    """Make a throwaway CA and certificates signed by it (EC P-256: fast to generate)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("the openssl command is needed to make TLS certificates (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    valid = ["-days", str(days)]
    run("req", "-x509", *key, *valid, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=inferq test CA")
    exts = {"server": "subjectAltName=IP:127.0.0.1,DNS:localhost", "client": "extendedKeyUsage=clientAuth"}
    for who, ext in exts.items():
        (folder / f"{who}.ext").write_text(ext + "\n")
        run("req", *key, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN=inferq test {who}")
        run(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{who}.crt", *valid, "-extfile", f"{who}.ext",
        )  # fmt: skip
    return TlsFiles(
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now (nothing listens there)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def redis_answers(url: str, timeout: float = 1.0, settings: Settings | None = None) -> bool:
    """Whether a Redis answers PING at ``url`` (over TLS with ``settings``' options for ``rediss://``)."""
    options: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    try:
        if settings is not None and uses_tls(url):
            options.update(tls_options(settings))
        client = redis.Redis.from_url(url, **options)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class LocalRedis:
    """A ``redis-server`` child process in its own folder, stopped by ``stop``.

    With ``tls``, it listens for TLS only (its URL is ``rediss://``) and, with
    ``tls_client_certs``, refuses clients that present no certificate signed by the CA.

    It dies with the process that started it, unless ``detach``: then it runs in a
    session of its own (a terminal's Ctrl-C or hangup does not reach it) and outlives
    its parent (``inferq demo --keep``); give it a ``workdir`` that outlives it too.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        appendonly: bool = False,
        workdir: Path | None = None,
        extra: list[str] | None = None,
        tls: TlsFiles | None = None,
        tls_client_certs: bool = False,
        detach: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.appendonly = appendonly
        self.extra = extra or []
        self.tls = tls
        self.tls_client_certs = tls_client_certs
        self.detach = detach
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="inferq-redis-")
        # Absolute: redis-server changes into ``--dir`` before it opens ``--logfile``, so a
        # relative log path (the demo's default ``.run/redis``) would name a missing file.
        self.workdir = Path(workdir or self._tmp.name).absolute()  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client_settings(self) -> Settings:
        """Settings whose broker and result backend are this server (TLS files included)."""
        tls = self.tls.settings(client_cert=self.tls_client_certs) if self.tls else {}
        return Settings(broker_url=self.url).with_(**tls)

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("redis-server not found; install it (apt-get install redis-server)")
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.tls:
            cmd[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            cmd += [
                "--tls-cert-file", str(self.tls.server_cert), "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "yes" if self.tls_client_certs else "no",
            ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd + self.extra,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Else an interrupted test run or demo leaves no Redis behind.
            preexec_fn=None if self.detach else die_with_parent,
            start_new_session=self.detach,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"redis-server exited with {self.proc.returncode}; see {self.workdir}/redis.log"
                )
            if redis_answers(self.url, timeout=0.2, settings=self.client_settings()):
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server on port {self.port} did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=10)
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
