"""``INFERQ_CONCURRENCY=auto`` plans a worker as ``--concurrency auto`` does; the option wins.

Each case builds settings the way the worker's entry points do (``ops/cli.py`` and
``workers/__main__.py``: ``Settings.from_env(concurrency=args.concurrency)``) and asks
``wants_auto_plan`` what ``cmd_worker`` would do, without starting anything.
"""

from __future__ import annotations

import argparse

import pytest

from tasks.errors import ConfigError
from tasks.settings import Settings
from workers.boot.cli import add_worker_arguments, wants_auto_plan


def worker(argv: list[str], environ: dict[str, str]) -> tuple[argparse.Namespace, Settings]:
    args = add_worker_arguments(argparse.ArgumentParser()).parse_args(argv)
    return args, Settings.from_env(environ, threads=args.threads, concurrency=args.concurrency)


def test_env_auto_plans_like_the_option() -> None:
    args, settings = worker([], {"INFERQ_CONCURRENCY": "auto"})
    assert settings.auto_concurrency and settings.concurrency == 1  # 1 until the plan replaces it
    assert wants_auto_plan(args, settings)


def test_env_number_runs_that_many_processes_without_planning() -> None:
    args, settings = worker([], {"INFERQ_CONCURRENCY": "3"})
    assert (settings.concurrency, settings.auto_concurrency) == (3, False)
    assert not wants_auto_plan(args, settings)


def test_no_env_and_no_option_runs_one_process_without_planning() -> None:
    args, settings = worker([], {})
    assert (settings.concurrency, settings.auto_concurrency) == (1, False)
    assert not wants_auto_plan(args, settings)


@pytest.mark.parametrize("raw", ["lots", "", "2.5", "Auto", "auto 2"])
def test_env_bad_value_names_the_variable_both_forms_and_what_came(raw: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^INFERQ_CONCURRENCY must be a positive integer or 'auto', got {raw!r}$"
    ):
        worker([], {"INFERQ_CONCURRENCY": raw})


def test_zero_concurrency_from_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^setting concurrency \(INFERQ_CONCURRENCY\) must be > 0, got 0$"):
        worker([], {"INFERQ_CONCURRENCY": "0"})


@pytest.mark.parametrize("raw", ["0", "-2", "lots", "2.5"])
def test_option_not_a_positive_number_names_the_option_and_what_came(
    raw: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        worker(["--concurrency", raw], {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --concurrency: expected a positive number or auto, got {raw!r}" in err


def test_option_number_wins_over_env_zero() -> None:
    _, settings = worker(["--concurrency", "2"], {"INFERQ_CONCURRENCY": "0"})
    assert settings.concurrency == 2


def test_option_number_wins_over_env_auto() -> None:
    args, settings = worker(["--concurrency", "2"], {"INFERQ_CONCURRENCY": "auto"})
    assert (settings.concurrency, settings.auto_concurrency) == (2, False)
    assert not wants_auto_plan(args, settings)


def test_option_number_wins_over_env_auto_even_in_settings_built_without_it() -> None:
    """``cmd_worker`` checks the option itself, not only what ``from_env`` made of it."""
    args, _ = worker(["--concurrency", "2"], {})
    assert not wants_auto_plan(args, Settings.from_env({"INFERQ_CONCURRENCY": "auto"}))


def test_option_auto_wins_over_env_number() -> None:
    args, settings = worker(["--concurrency", "auto"], {"INFERQ_CONCURRENCY": "4"})
    assert wants_auto_plan(args, settings)


def test_env_auto_survives_the_trip_to_a_child_process_and_a_plan_ends_it() -> None:
    """Children get ``settings.env()``: the calibrating child sees ``auto`` (and accepts
    it); once planned, worker processes get the chosen number, so none plans again."""
    settings = Settings.from_env({"INFERQ_CONCURRENCY": "auto"})
    assert settings.env()["INFERQ_CONCURRENCY"] == "auto"
    assert "INFERQ_AUTO_CONCURRENCY" not in settings.env()
    assert Settings.from_env(settings.env()) == settings
    planned = settings.with_(concurrency=3, auto_concurrency=False)
    assert planned.env()["INFERQ_CONCURRENCY"] == "3"
    assert not Settings.from_env(planned.env()).auto_concurrency


def test_auto_has_no_variable_of_its_own() -> None:
    assert not Settings.from_env({"INFERQ_AUTO_CONCURRENCY": "True"}).auto_concurrency
