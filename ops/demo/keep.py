"""What ``inferq demo --keep`` leaves running: its record, how to reach it, how to stop it.

The record (``.run/demo-kept.json``) names each process by PID, start time and command
line, so ``inferq demo --stop`` signals only processes that are still the ones the
demo started, never a reused PID, and never a configured Redis the demo merely used.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ops.local.processes import ProcessRecord, StopOutcome, stop_recorded
from tasks.errors import InferqError
from tasks.settings import redact_url

#: ``--keep``'s record of what it left running, in the log folder, read by ``--stop``.
KEPT_FILE = "demo-kept.json"
#: ``--stop`` stops the worker and Flower while Redis still answers: the worker then
#: stores and acks what it holds, and neither waits out reconnection retries.
STOP_ORDER = ("gateway", "worker", "flower", "redis")
LABELS = {"gateway": "gateway", "worker": "worker", "flower": "Flower", "redis": "Redis"}
STOP_MESSAGES = {
    StopOutcome.STOPPED: "stopped",
    StopOutcome.GONE: "had already exited",
    StopOutcome.OTHER: "is now another process (start time or command line differ): left alone",
    StopOutcome.STUCK: "still runs after SIGKILL",
}


@dataclass(frozen=True)
class Kept:
    """What ``--keep`` left running: enough for ``--stop`` and for people to find it all."""

    #: ``worker``, ``flower``, ``gateway`` (when its extra is installed) and, only when
    #: the demo started it, ``redis``.
    processes: dict[str, ProcessRecord]
    redis_url: str
    flower_url: str
    logs: dict[str, str]
    gateway_url: str = ""

    def save(self, path: Path) -> None:
        doc = {
            "redis_url": self.redis_url,
            "flower_url": self.flower_url,
            "gateway_url": self.gateway_url,
            "logs": self.logs,
            "processes": {name: r.to_json() for name, r in self.processes.items()},
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Kept:
        doc = json.loads(path.read_text())
        return cls(
            processes={n: ProcessRecord.from_json(r) for n, r in doc["processes"].items()},
            redis_url=doc["redis_url"],
            flower_url=doc["flower_url"],
            logs=doc["logs"],
            gateway_url=doc.get("gateway_url", ""),  # records of demos before the gateway
        )


def record_kept(
    path: Path,
    procs: dict[str, subprocess.Popen[bytes]],
    log_files: dict[str, Path],
    redis_url: str,
    flower_url: str,
    gateway_url: str = "",
) -> Kept:
    records = {name: ProcessRecord.read(p.pid) for name, p in procs.items()}
    dead = sorted(name for name, r in records.items() if r is None)
    if dead:
        raise InferqError(f"the demo's {', '.join(dead)} exited; see the logs in {path.parent}")
    kept = Kept(
        processes={name: r for name, r in records.items() if r is not None},
        redis_url=redact_url(redis_url),
        flower_url=flower_url,
        logs={name: str(log.resolve()) for name, log in log_files.items() if name in procs},
        gateway_url=gateway_url,
    )
    kept.save(path)
    return kept


def kept_running(path: Path) -> bool:
    try:
        return any(r.is_running() for r in Kept.load(path).processes.values())
    except (OSError, ValueError, KeyError, TypeError):  # absent, or not a record we can read
        return False


def _inferq() -> str:
    """This inferq as a shell command: ``inferq`` when that is it on PATH, else its full path."""
    launcher = Path(sys.executable).parent / "inferq"
    if not launcher.is_file():
        return f"{shlex.quote(sys.executable)} -m ops.cli"
    found = shutil.which("inferq")
    return "inferq" if found and Path(found) == launcher else shlex.quote(str(launcher))


def stop_command(kept_file: Path) -> str:
    """The command that stops what ``--keep`` left running, to paste into any shell."""
    return f"{_inferq()} demo --stop {shlex.quote(str(kept_file))}"


def kill_command(kept: Kept) -> str:
    """The same by hand: the gateway, worker and Flower first, Redis once they are gone."""
    first = " ".join(
        str(kept.processes[n].pid) for n in ("gateway", "worker", "flower") if n in kept.processes
    )
    if "redis" not in kept.processes:
        return f"kill {first}"
    redis_pid = kept.processes["redis"].pid
    return f"kill {first}; while kill -0 {first} 2>/dev/null; do sleep 0.2; done; kill {redis_pid}"


def print_kept(kept: Kept, kept_file: Path, flower_user: str, password: str, models: str) -> None:
    pids = {name: r.pid for name, r in kept.processes.items()}
    print("\n--keep: left running, each in a session of its own (closing this terminal does not stop them):")
    if "redis" in pids:
        print(f"  Redis   {kept.redis_url}  pid {pids['redis']}  log {kept.logs['redis']}")
    print(f"  worker  {models}  pid {pids['worker']}  log {kept.logs['worker']}")
    print(
        f"  Flower  {kept.flower_url}  user {flower_user}  password {password}  "
        f"pid {pids['flower']}  log {kept.logs['flower']}"
    )
    if "gateway" in pids:
        print(
            f"  gateway {kept.gateway_url}  (HTTP, /docs)  pid {pids['gateway']}  log {kept.logs['gateway']}"
        )
    if "redis" in pids:
        print("point other inferq commands (submit, status, bench, ...) at this Redis:")
        print(f"  export INFERQ_BROKER_URL={kept.redis_url} INFERQ_RESULT_BACKEND={kept.redis_url}")
        what = "gateway, worker, Flower, then Redis"
    else:
        print(
            f"they use the configured Redis at {kept.redis_url}, which the demo did not start and never stops"
        )
        what = "gateway, worker and Flower"
    print(f"to stop them ({what}; it checks that each PID is still the process the demo started):")
    print(f"  {stop_command(kept_file)}")
    print(f"or by hand:\n  {kill_command(kept)}")


def stop_kept(kept_file: Path, grace_s: float = 30.0) -> int:
    """``inferq demo --stop``: stop what ``--keep`` left running, as recorded in ``kept_file``.

    Only a process that is still the recorded one (PID, start time, command line) is
    signalled. A configured Redis the demo used was never recorded, so it is never
    stopped. The record is removed once nothing in it runs.
    """
    try:
        kept = Kept.load(kept_file)
    except FileNotFoundError:
        print(f"inferq demo --stop: no {kept_file}; `inferq demo --keep` writes it", file=sys.stderr)
        return 1
    except (ValueError, KeyError, TypeError) as exc:
        print(f"inferq demo --stop: cannot read {kept_file}: {exc!r}", file=sys.stderr)
        return 2
    stuck = False
    for name in STOP_ORDER:
        record = kept.processes.get(name)
        if record is not None:
            outcome = stop_recorded(record, grace_s)
            stuck |= outcome is StopOutcome.STUCK
            print(f"{LABELS[name]} (pid {record.pid}) {STOP_MESSAGES[outcome]}", flush=True)
    if stuck:
        return 1
    kept_file.unlink()
    return 0
