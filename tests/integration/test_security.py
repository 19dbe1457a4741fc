"""Security: a password-protected Redis, Redis over TLS (mutual), and a models folder
that nothing can lead out of. Real redis-servers, real workers, real Flower."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from kombu.exceptions import OperationalError

from ops.local.processes import stop_process
from ops.local.redis_server import LocalRedis, TlsFiles, free_port, make_tls_files
from producers.client import Client
from tasks.app import create_app
from tasks.errors import BadInput, ConfigError
from tasks.settings import Settings
from tests.conftest import ROOT, WorkerProcess
from workers.boot.cli import add_model
from workers.models.registry import ModelPathRefused, Registry

pytestmark = pytest.mark.integration

#: Distinctive, so that finding it anywhere in a log or an output is a leak.
PASSWORD = "Sx9-kite-violet-7731"
WRONG = "Wq2-not-the-password-0815"


def inferq(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**os.environ, **settings.env()}, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )  # fmt: skip


def digit(settings: Settings, i: int) -> np.ndarray:
    return np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")[i]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def password_redis() -> Iterator[LocalRedis]:
    with LocalRedis(password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def tls_redis(tls_files: TlsFiles) -> Iterator[LocalRedis]:
    """TLS only, a password, and a client certificate signed by the test CA required."""
    with LocalRedis(password=PASSWORD, tls=tls_files, tls_client_certs=True) as server:
        yield server


def serve(settings: Settings, log: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, ["digits:fp32"], log)
    try:
        with Client(settings) as c:
            worker.wait_ready(c)
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def password_worker(
    password_redis: LocalRedis, models_dir: Path, tmp_path_factory
) -> Iterator[WorkerProcess]:
    settings = Settings(broker_url=password_redis.url, models_dir=models_dir)
    yield from serve(settings, tmp_path_factory.mktemp("pw") / "worker.log")


@pytest.fixture(scope="module")
def tls_worker(tls_redis: LocalRedis, models_dir: Path, tmp_path_factory) -> Iterator[WorkerProcess]:
    settings = tls_redis.client_settings().with_(models_dir=models_dir)
    yield from serve(settings, tmp_path_factory.mktemp("tls") / "worker.log")


def assert_round_trip_and_no_password_shown(worker: WorkerProcess, port: int) -> None:
    settings = worker.settings
    with Client(settings) as client:
        res = client.submit("digits", digit(settings, 3), variant="fp32", no_cache=True).wait(timeout=30)
    assert res.outputs["probs"].shape == (10,)
    for args in (["status"], ["status", "--json"]):
        out = inferq(settings, *args)
        assert out.returncode == 0, out.stderr
        assert PASSWORD not in out.stdout + out.stderr
        assert f":***@127.0.0.1:{port}/0" in out.stdout  # the URL is shown, redacted
    log = worker.log_text()
    assert f"127.0.0.1:{port}" in log  # the worker logs its broker, so this checks redaction
    assert PASSWORD not in log


def test_job_round_trips_through_a_password_protected_redis_and_the_password_is_never_shown(
    password_worker: WorkerProcess, password_redis: LocalRedis
) -> None:
    assert_round_trip_and_no_password_shown(password_worker, password_redis.port)


def test_a_wrong_password_fails_fast_with_an_authentication_error_that_hides_it(
    password_redis: LocalRedis, models_dir: Path
) -> None:
    wrong = Settings(broker_url=password_redis.url.replace(PASSWORD, WRONG), models_dir=models_dir)
    t0 = time.monotonic()
    with (
        Client(wrong) as client,
        pytest.raises(ConfigError, match="invalid username-password pair") as caught,
    ):
        client.submit("digits", digit(wrong, 0), variant="fp32")
    assert isinstance(caught.value.__cause__, redis.AuthenticationError)
    assert WRONG not in str(caught.value) and PASSWORD not in str(caught.value)
    for args in (["status"], ["worker", "--models", "digits:fp32"]):
        out = inferq(wrong, *args)
        assert out.returncode != 0
        assert "invalid username-password pair" in out.stderr
        assert WRONG not in out.stdout + out.stderr and PASSWORD not in out.stdout + out.stderr
    assert time.monotonic() - t0 < 30


def test_job_round_trips_over_mutual_tls_and_the_password_is_never_shown(
    tls_worker: WorkerProcess, tls_redis: LocalRedis
) -> None:
    assert tls_worker.settings.broker_url.startswith("rediss://")
    assert_round_trip_and_no_password_shown(tls_worker, tls_redis.port)


def test_a_client_without_the_ca_is_refused_by_redis_py_and_by_celery(tls_redis: LocalRedis) -> None:
    untrusting = tls_redis.client_settings().with_(redis_ca_certs="")  # the system's CAs only
    with (
        Client(untrusting) as client,
        pytest.raises(redis.ConnectionError, match="certificate verify failed"),
    ):
        client.backend.ping()
    app = create_app(untrusting)  # kombu on its own would connect without verifying
    with pytest.raises(OperationalError, match="certificate verify failed"), app.connection() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        app.backend.client.ping()


def test_a_client_without_a_certificate_is_refused_by_a_mutual_tls_redis(tls_redis: LocalRedis) -> None:
    with Client(tls_redis.client_settings()) as client:
        assert client.backend.ping()
    anonymous = tls_redis.client_settings().with_(redis_certfile="", redis_keyfile="")
    # Under TLS 1.3 the server's refusal arrives after the handshake: as an alert, or
    # as the connection closed under the first write, whichever the client sees first.
    refused = "certificate required|EOF occurred in violation of protocol|reset by peer"
    with Client(anonymous) as client, pytest.raises(redis.ConnectionError, match=refused):
        client.backend.ping()


def flower_get(base: str, path: str, settings: Settings) -> tuple[int, bytes]:
    token = base64.b64encode(f"{settings.flower_user}:{settings.flower_password}".encode()).decode()
    request = urllib.request.Request(base + path, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_flower_reaches_a_tls_broker_sees_the_worker_queue_and_jobs(
    tls_worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = tls_worker.settings.with_(flower_port=free_port(), flower_password="flower-pw-5521")
    base = f"http://127.0.0.1:{settings.flower_port}"
    with (tmp_path / "flower.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "flower"],
            env={**os.environ, **settings.env()}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        # The worker's queue is named in its reply over the broker (TLS), and its length
        # comes from Flower's own Redis client (TLS): both must work.
        queue = f"inferq.worker.{tls_worker.hostname}"
        lengths: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and queue not in lengths:
            try:
                status, body = flower_get(base, "/api/queues/length", settings)
                if status == 200:
                    lengths = {q["name"]: q["messages"] for q in json.loads(body)["active_queues"]}
            except OSError:
                pass
            time.sleep(0.3)
        assert lengths.get(queue) == 0, (tmp_path / "flower.log").read_text()[-3000:]
        with Client(settings) as client:
            job = client.submit("digits", digit(settings, 5), variant="fp32", no_cache=True)
            job.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            seen = json.loads(flower_get(base, "/api/tasks", settings)[1])
            if seen.get(job.id, {}).get("state") == "SUCCESS":
                break
            time.sleep(0.3)
        assert seen.get(job.id, {}).get("state") == "SUCCESS"
    finally:
        stop_process(proc, grace_s=20)
    log_text = (tmp_path / "flower.log").read_text()
    assert PASSWORD not in log_text and settings.flower_password not in log_text


# The models folder: nothing a model entry names may lie outside it.


@pytest.fixture()
def models_root(models_dir: Path, tmp_path: Path) -> Path:
    """A models folder with one good model and one entry for each way out of the folder."""
    root, outside = tmp_path / "models", tmp_path / "outside"
    good = models_dir / "digits" / "fp32"
    meta = json.loads((good / "meta.json").read_text())
    (outside / "fp32").mkdir(parents=True)
    (outside / "secret.tflite").write_bytes((good / "model.tflite").read_bytes())
    (outside / "fp32" / "meta.json").write_text(json.dumps({**meta, "name": "away"}))
    (outside / "fp32" / "model.tflite").write_bytes(b"x")
    for variant, file in (
        ("dotdot", "../../../outside/secret.tflite"),
        ("absolute", str(outside / "secret.tflite")),
        ("nul", "model.tflite\0../../../outside/secret.tflite"),
    ):
        (root / "evil" / variant).mkdir(parents=True)
        (root / "evil" / variant / "meta.json").write_text(
            json.dumps({**meta, "name": "evil", "variant": variant, "file": file})
        )
    (root / "evil" / "link").mkdir()
    (root / "evil" / "link" / "meta.json").write_text(json.dumps({**meta, "name": "evil", "variant": "link"}))
    (root / "evil" / "link" / "model.tflite").symlink_to(outside / "secret.tflite")
    (root / "away").symlink_to(outside, target_is_directory=True)  # a whole model folder outside
    saved = root / "evil" / "saved" / "saved_model"  # a SavedModel whose variables live outside
    saved.mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"")
    (saved / "variables").symlink_to(outside, target_is_directory=True)
    (saved.parent / "meta.json").write_text(
        json.dumps({**meta, "name": "evil", "variant": "saved", "file": "saved_model"})
    )
    (root / "digits" / "fp32").mkdir(parents=True)
    for name in ("meta.json", "model.tflite"):
        (root / "digits" / "fp32" / name).write_bytes((good / name).read_bytes())
    return root


@pytest.mark.parametrize(
    "key", ["evil:dotdot", "evil:absolute", "evil:nul", "evil:link", "evil:saved", "away:fp32"]
)
def test_a_model_entry_leading_out_of_the_models_folder_is_refused(models_root: Path, key: str) -> None:
    name, variant = key.split(":")
    with pytest.raises(ModelPathRefused, match=r"(outside|inside) the models folder"):
        Registry(models_root).get(name, variant)


def test_listing_the_models_folder_logs_each_refusal_and_keeps_the_good_models(
    models_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="workers.models.registry"):
        entries = Registry(models_root).entries()
    assert [e.key for e in entries] == ["digits:fp32"]
    refused = [r.getMessage() for r in caplog.records if "the models folder" in r.getMessage()]
    assert len(refused) == 6
    assert any("'../../../outside/secret.tflite'" in m for m in refused)


def test_a_worker_asked_for_an_escaping_model_exits_naming_it(models_root: Path, settings: Settings) -> None:
    out = inferq(settings.with_(models_dir=models_root), "worker", "--models", "evil:link")
    assert out.returncode == 2
    assert "ModelPathRefused" in out.stderr and "evil/link/meta.json" in out.stderr


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "/etc/cron.d/x", "a\0b", "../evil", "", "a" * 65])
@pytest.mark.parametrize("as_variant", [False, True])
def test_models_add_refuses_names_that_are_not_plain(
    name: str, as_variant: bool, models_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    source = models_dir / "digits" / "fp32" / "model.tflite"
    args = ("ok", source, name, None) if as_variant else (name, source, None, None)
    with pytest.raises(BadInput, match="name must match"):
        add_model(Registry(root), *args)
    assert not root.exists()


def test_models_add_refuses_a_model_folder_that_is_a_symlink_out(models_dir: Path, tmp_path: Path) -> None:
    root, outside = tmp_path / "models", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    source = models_dir / "digits" / "fp32" / "model.tflite"
    with pytest.raises(BadInput, match="escapes the models folder"):
        add_model(Registry(root), "linked", source, "fp32", None)
    assert list(outside.iterdir()) == []
