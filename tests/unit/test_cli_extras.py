"""A command whose optional package is missing says which extra installs it."""

from __future__ import annotations

import pytest

from ops import cli


def test_a_missing_optional_package_names_the_extra_to_install(monkeypatch, capsys):
    def dispatch(args, settings):
        raise ModuleNotFoundError("No module named 'tqdm'", name="tqdm")

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    assert cli.main(["status"]) == 2
    assert (
        "inferq: ModuleNotFoundError: inferq status needs tqdm, which is not installed: "
        "pip install 'inferq[cli]'" in capsys.readouterr().err
    )


def test_a_missing_module_of_our_own_is_not_hidden(monkeypatch):
    def dispatch(args, settings):
        raise ModuleNotFoundError("No module named 'ops.nowhere'", name="ops.nowhere")

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["status"])
