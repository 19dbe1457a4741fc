"""Running another checkout's worker in a benchmark that compares worker trees in one run."""

from __future__ import annotations

from pathlib import Path


def cli_module(tree: Path) -> str:
    """The module behind that checkout's ``inferq`` command: ``ops.cli`` since the
    architecture issue (13), ``producers.cli`` before it."""
    return "ops.cli" if (Path(tree) / "ops" / "cli.py").is_file() else "producers.cli"
