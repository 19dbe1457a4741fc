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
