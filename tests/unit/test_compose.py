"""docker-compose.yml and the Dockerfile, kept correct by construction.

There is no container engine on the test machines, so the stack itself never runs in
tests; what it runs does (each service's ``inferq`` command is tested directly). These
tests hold the two files to the code: every command parses with the real CLI, the
image carries every package and the extras its services need, and nothing is
published beyond the host's loopback.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.cli import build_parser
from tasks.settings import Settings
from workers.boot.cli import wants_auto_plan

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def inferq_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("build") == "."}


@pytest.mark.parametrize("name", sorted(n for n, s in inferq_services().items() if "command" in s))
def test_each_service_command_is_a_valid_inferq_command(name: str) -> None:
    command = inferq_services()[name]["command"]
    args = build_parser().parse_args(command)  # SystemExit (a failed test) if the CLI refuses it
    assert args.cmd == command[0]


def test_the_image_carries_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.M))
    assert set(packages) <= copied, f"the Dockerfile does not COPY {sorted(set(packages) - copied)}"


def test_the_image_installs_the_extras_its_services_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (extras,) = re.findall(r'pip install [^"]*"\.\[([a-z,]+)\]"', dockerfile)
    installed = set(extras.split(","))
    needs = {"worker": "worker", "flower": "flower", "gateway": "gateway", "models": "tf"}
    for svc in inferq_services().values():
        cmd = svc.get("command", [""])[0]
        if cmd in needs:
            assert needs[cmd] in installed, f"`inferq {cmd}` needs the {needs[cmd]} extra in the image"


def test_published_ports_stay_on_the_host_loopback() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_services_bind_all_interfaces_only_inside_their_container() -> None:
    """Inside a container 127.0.0.1 is unreachable from the host; the gateway and Flower
    are told to bind 0.0.0.0 there (and are published on the host's loopback only)."""
    services = compose()["services"]
    assert services["gateway"]["command"][services["gateway"]["command"].index("--host") + 1] == "0.0.0.0"
    assert services["flower"]["environment"]["INFERQ_FLOWER_ADDRESS"] == "0.0.0.0"


def test_prometheus_scrapes_every_metrics_endpoint_the_stack_serves() -> None:
    """One target per worker process (``--concurrency N``: N ports from 9808 up), the
    gateway and Flower; and the workers serve /metrics beyond their own loopback."""
    services = compose()["services"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    worker = services["worker"]
    args = build_parser().parse_args(worker["command"])
    env = {k: str(v) for k, v in (worker.get("environment") or {}).items()}
    settings = Settings.from_env(env, concurrency=args.concurrency)
    # A planned process count is the host's business: the targets could not list its ports.
    assert not wants_auto_plan(args, settings), (
        "compose's worker plans its processes; Prometheus lists fixed ports"
    )
    first = 9808  # INFERQ_METRICS_PORT's default; compose does not change it
    assert {f"worker:{first + i}" for i in range(settings.concurrency)} <= targets
    assert worker["environment"]["INFERQ_METRICS_ADDRESS"] == "0.0.0.0"
    assert "gateway:8000" in targets and "flower:5555" in targets
    mount = services["prometheus"]["volumes"][0]
    assert mount.startswith("./deploy/prometheus/prometheus.yml:")


def test_the_image_runs_as_a_user_that_owns_the_models_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the image runs as root"
    assert re.search(rf"chown {users[-1]} /models", dockerfile), "the models volume is not the user's"


def test_the_documented_producer_example_reads_a_file_the_models_service_writes() -> None:
    """The compose file's example must name a file ``inferq models build-examples`` makes."""
    header = (ROOT / "docker-compose.yml").read_text()
    (example,) = re.findall(r"docker compose run --rm producer (.+?--wait)", header)
    args = build_parser().parse_args(example.split())
    from workers.models.registry import Registry

    models = compose()["x-inferq-env"]["INFERQ_MODELS_DIR"]
    written = Registry(Path(models)).data_dir("digits") / "heldout_x.npy"  # build-examples' np.save
    assert Path(str(args.input)) == written
    assert 'np.save(data / "heldout_x.npy"' in (ROOT / "workers" / "models" / "examples.py").read_text()


def test_the_makefile_declares_only_targets_it_has() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (phony,) = re.findall(r"^\.PHONY: (.+)$", makefile, re.M)
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    assert set(phony.split()) <= targets, f".PHONY names {set(phony.split()) - targets}, which do not exist"
