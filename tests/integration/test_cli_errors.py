"""The ``inferq`` command's errors: one line ``inferq: <Kind>: ...`` and exit 2, never a
traceback, a silent success or an endless retry (no worker needed for any of these)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import LocalRedis
from tasks.settings import Settings
from tests.helpers.cli import ROOT, inferq, one_line_error, port_in_use

pytestmark = pytest.mark.integration

PASSWORD = "cli-errors-password"


@pytest.fixture(scope="module")
def password_redis() -> Iterator[LocalRedis]:
    with LocalRedis(password=PASSWORD) as server:
        yield server


def digit(models_dir: Path) -> np.ndarray:
    return np.load(models_dir / "digits" / "data" / "heldout_x.npy")[0]


def test_build_examples_refuses_an_unknown_example_before_building_anything(tmp_path: Path) -> None:
    proc = inferq(Settings(models_dir=tmp_path / "models"), "models", "build-examples", "--only", "bogus")
    line = one_line_error(proc, "BadInput")
    assert "digits, mobilenet_v2" in line and "bogus" in line
    assert not (tmp_path / "models").exists()


def test_flower_on_a_port_in_use_says_which_port(settings: Settings) -> None:
    with port_in_use() as port:
        proc = inferq(settings, "flower", "--port", str(port), timeout=30)
    line = one_line_error(proc, "ConfigError")
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_flower_with_redis_down_fails_at_once_as_other_commands_do(tmp_path: Path) -> None:
    down = Settings(broker_url="redis://127.0.0.1:1/0", models_dir=tmp_path)
    t0 = time.monotonic()
    proc = inferq(down, "flower", timeout=30)
    took = time.monotonic() - t0
    line = one_line_error(proc, "BrokerUnavailable")
    assert "redis://127.0.0.1:1/0" in line and "Connection refused" in line
    assert took < 10, f"took {took:.1f} s (the interpreter's start included)"
    assert "trying again" not in proc.stdout + proc.stderr


def test_flower_without_its_extra_names_the_extra(settings: Settings, tmp_path: Path) -> None:
    # Stands in for an install without the flower extra: importing flower fails as it would.
    (tmp_path / "flower.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'flower'\", name='flower')\n"
    )
    proc = inferq(settings, "flower", env={"PYTHONPATH": str(tmp_path)}, timeout=30)
    line = one_line_error(proc, "ModuleNotFoundError")
    assert "pip install 'inferq[flower]'" in line


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("junk.png", b"this is not an image", "expected a PNG or JPEG image"),
        ("junk.json", b'{"image": [1, 2,', "expected JSON"),
        ("latin1.json", b"[\xff\xfe]", "expected JSON"),
        ("ragged.json", b"[[1, 2], [3]]", "rectangular nested list of numbers"),
        ("words.json", b'["a", "b"]', "rectangular nested list of numbers"),
    ],
)
def test_submit_refuses_a_malformed_input_file_in_one_line(
    settings: Settings, tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    (tmp_path / name).write_bytes(content)
    proc = inferq(settings, "submit", "digits:fp32", "--input", str(tmp_path / name))
    line = one_line_error(proc, "BadInput")
    assert expected in line and name in line


def test_output_into_a_closed_pipe_ends_quietly(settings: Settings) -> None:
    """``inferq models list --json | head -1``: the reader is gone before all is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ops.cli", "models", "list", "--json"],
            env={**os.environ, **settings.env()},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr == "", proc.stderr


def test_a_redis_that_asks_for_a_password_none_was_given_for_is_a_config_error(
    password_redis: LocalRedis, tmp_path: Path
) -> None:
    no_password = Settings(broker_url=f"redis://127.0.0.1:{password_redis.port}/0", models_dir=tmp_path)
    for args in (["status"], ["result", "0" * 32], ["flower"]):
        line = one_line_error(inferq(no_password, *args, timeout=30), "ConfigError")
        assert "asks for a password and none was given" in line, line
        assert f"redis://127.0.0.1:{password_redis.port}/0" in line and "HELLO" not in line


def test_a_wrong_password_is_a_config_error_that_hides_it(password_redis: LocalRedis, tmp_path: Path) -> None:
    wrong = Settings(broker_url=password_redis.url.replace(PASSWORD, "wrong-one"), models_dir=tmp_path)
    line = one_line_error(inferq(wrong, "status", timeout=30), "ConfigError")
    assert "wrong-one" not in line and PASSWORD not in line and ":***@" in line


@pytest.mark.parametrize("value", ["0", "-3"])
def test_worker_refuses_a_batch_size_below_one(settings: Settings, value: str) -> None:
    line = one_line_error(inferq(settings, "worker", "--max-batch-size", value), "BadInput")
    assert "--max-batch-size must be >= 1" in line and value in line


def test_result_of_an_unknown_job_says_so_and_fails(settings: Settings) -> None:
    for extra in ([], ["--json"]):
        proc = inferq(settings, "result", "f" * 32, *extra)
        line = one_line_error(proc, "JobNotFound")
        assert "unknown" in line and proc.stdout == ""


def test_a_relative_models_folder_missing_here_is_said_with_where_it_looked(
    settings: Settings, tmp_path: Path
) -> None:
    relative = settings.with_(models_dir=Path("models"))
    listed = one_line_error(inferq(relative, "models", "list", cwd=tmp_path), "ConfigError")
    assert f"{tmp_path / 'models'} " in listed and "does not exist" in listed
    assert "INFERQ_MODELS_DIR=models" in listed
    worker = one_line_error(inferq(relative, "worker", "--models", "digits", cwd=tmp_path), "ConfigError")
    assert str(tmp_path / "models") in worker and "does not exist" in worker
    several = inferq(relative, "worker", "--concurrency", "2", cwd=tmp_path, timeout=30)
    assert "does not exist" in one_line_error(several, "ConfigError")


def test_models_add_refuses_to_overwrite_without_force(settings: Settings, tmp_path: Path) -> None:
    mine = settings.with_(models_dir=tmp_path / "models")
    model = settings.models_dir / "digits" / "fp32" / "model.tflite"
    first = inferq(mine, "models", "add", "mine", str(model), "--version", "one")
    assert first.returncode == 0, first.stderr
    again = inferq(mine, "models", "add", "mine", str(model), "--version", "two")
    line = one_line_error(again, "BadInput")
    assert "mine:fp32 already exists" in line and "--force" in line
    meta = json.loads((tmp_path / "models" / "mine" / "fp32" / "meta.json").read_text())
    assert meta["version"] == "one"
    forced = inferq(mine, "models", "add", "mine", str(model), "--version", "two", "--force")
    assert forced.returncode == 0, forced.stderr
    meta = json.loads((tmp_path / "models" / "mine" / "fp32" / "meta.json").read_text())
    assert meta["version"] == "two"


SHADOW = "x = 1  # a project's own tasks module, as Celery projects often have\n"


def test_a_users_tasks_py_shadowing_ours_is_named_with_the_fix(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(SHADOW)
    env = {**os.environ, **settings.env()}
    for code in ("import producers", "from producers import Client", "import workers"):
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: the module 'tasks' was imported from"), proc.stderr
        assert str(tmp_path / "tasks.py") in last and "Rename your module" in last
        assert "cannot import name" not in proc.stderr
    line = one_line_error(inferq(settings, "status", cwd=tmp_path), "ImportError")
    assert str(tmp_path / "tasks.py") in line and "run from another directory" in line


def test_deadline_ms_must_be_a_positive_number(settings: Settings) -> None:
    import asyncio

    from producers import AsyncClient, BadInput, Client

    x = digit(settings.models_dir)
    bad: list[object] = [0, -5, "100", float("nan"), True]
    with Client(settings) as client:
        for value in bad:
            with pytest.raises(BadInput, match="deadline_ms must be a number of milliseconds > 0"):
                client.submit("digits", x, deadline_ms=value)  # type: ignore[arg-type]
            with pytest.raises(BadInput, match="deadline_ms"):
                client.submit_many("digits", [x], deadline_ms=value)  # type: ignore[arg-type]

    async def on_a_loop() -> None:
        async with AsyncClient(settings) as client:
            for value in bad:
                with pytest.raises(BadInput, match="deadline_ms"):
                    await client.submit("digits", x, deadline_ms=value)  # type: ignore[arg-type]

    asyncio.run(on_a_loop())
