"""The workers ``inferq bench --compare`` and ``inferq tune`` start are one process each,
whatever ``INFERQ_CONCURRENCY`` the caller exported (they inherit the environment).

The command is parsed by the real ``inferq`` parser and judged by ``wants_auto_plan``,
as ``cmd_worker`` would, with the caller's environment; nothing is started.
"""

from __future__ import annotations

import pytest

from ops.bench.managed import WorkerConfig, worker_command
from ops.cli import build_parser
from tasks.settings import Settings
from workers.boot.cli import wants_auto_plan


@pytest.mark.parametrize("exported", [{"INFERQ_CONCURRENCY": "auto"}, {"INFERQ_CONCURRENCY": "4"}, {}])
def test_a_managed_worker_runs_one_process_whatever_concurrency_the_caller_exported(
    exported: dict[str, str],
) -> None:
    cmd = worker_command(
        "digits:fp32", WorkerConfig("fp32", max_batch_size=8, threads=1), "bench-x@localhost"
    )
    assert cmd[1:4] == ["-m", "ops.cli", "worker"]
    args = build_parser().parse_args(cmd[3:])
    settings = Settings.from_env(exported, threads=args.threads, concurrency=args.concurrency)
    assert not wants_auto_plan(args, settings)
    assert settings.concurrency == 1
    assert (args.max_batch_size, args.threads) == (8, 1)  # the configuration tune varies still reaches it
