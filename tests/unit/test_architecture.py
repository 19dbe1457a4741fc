"""The layout's promises, checked from the code's own imports.

- No import circle anywhere: every ``import`` counts, also those inside functions and
  under ``TYPE_CHECKING`` (a circle hidden there is still one).
- The rooms depend one way: ``tasks`` (the contract) on nothing of ours; ``producers``
  (the client library) and ``workers`` only on ``tasks``; ``gateway`` (HTTP over the
  client library) only on ``producers`` and ``tasks``; ``ops`` (operator tools) on any of
  them; nothing of the library on ``ops`` or ``benchmarks``.
- Inside ``workers`` the stages depend downward along a job's path: ``boot`` may use
  every stage, ``serving`` uses ``broker`` and ``models``, and ``broker`` and ``models``
  use no other stage.
- ``producers`` imports (in a fresh interpreter) without TensorFlow, LiteRT, the
  worker side or the operator tools; so does ``gateway``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks", "producers", "workers", "ops", "gateway", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports anywhere in its body (resolved to a module of ours)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` names the module pkg.mod when there is one, else a
            # name defined in pkg itself (its ``__init__``).
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # A package's __init__ is imported along with any of its modules, but importing a
    # package does not import its modules: edges go from the importer to what it names.
    return {m: imports_of(p, known) - {m} for m, p in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(g, white)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = grey
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if color.get(m, black) == grey:
                return [*stack[stack.index(m) :], m]
            if color.get(m) == white and (found := visit(m)):
                return found
        stack.pop()
        color[n] = black
        return None

    for n in sorted(g):
        if color[n] == white and (found := visit(n)):
            return found
    return None


def test_the_tree_has_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle():
    """The check above can fail: a circle through three modules is found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


ALLOWED = {
    "tasks": {"tasks"},
    "producers": {"producers", "tasks"},
    "workers": {"workers", "tasks"},
    "gateway": {"gateway", "producers", "tasks"},
    "ops": {"ops", "gateway", "producers", "workers", "tasks"},
}


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(room):
    wrong = {
        f"{m} -> {dep}"
        for m, deps in graph().items()
        if m.split(".")[0] == room
        for dep in deps
        if dep.split(".")[0] not in ALLOWED[room]
    }
    assert not wrong, sorted(wrong)


#: The stages of ``workers``, and which other stages each may import.
STAGES = {
    "workers.boot": {"workers.broker", "workers.models", "workers.serving"},
    "workers.broker": set(),
    "workers.models": set(),
    "workers.serving": {"workers.broker", "workers.models"},
}


def stage_of(module: str) -> str | None:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def test_worker_stages_depend_along_the_job_path():
    wrong = set()
    for m, deps in graph().items():
        own = stage_of(m)
        if own is None:
            continue
        for dep in deps:
            other = stage_of(dep)
            if other is not None and other != own and other not in STAGES[own]:
                wrong.add(f"{m} -> {dep}")
    assert not wrong, sorted(wrong)


def loaded_after(imports: str, banned: tuple[str, ...]) -> list[str]:
    """Top-level packages of ``banned`` found in ``sys.modules`` after ``imports`` in a fresh interpreter."""
    code = f"import sys\n{imports}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({banned!r})))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(ast.literal_eval(proc.stdout.strip().splitlines()[-1]))


HEAVY = ("tensorflow", "ai_edge_litert", "tflite_runtime", "keras")


def test_the_client_library_imports_without_tensorflow_litert_workers_or_tools():
    imports = "import producers\nfrom producers import Client, Job, Result"
    # tqdm and PIL are the ``cli`` extra's: the base install (the client library) lacks them.
    assert loaded_after(imports, (*HEAVY, "ops", "workers", "flower", "matplotlib", "tqdm", "PIL")) == []


def test_the_gateway_imports_without_tensorflow_litert_workers_or_tools():
    imports = "import gateway.app, gateway.server\nfrom gateway.app import create_app"
    assert loaded_after(imports, (*HEAVY, "ops", "workers", "flower", "matplotlib")) == []


def test_the_contract_imports_without_tensorflow_or_litert():
    imports = "import tasks, tasks.wire, tasks.kombu_layout, tasks.lua"
    assert loaded_after(imports, (*HEAVY, "producers", "workers", "ops")) == []


def test_the_import_probe_sees_a_heavy_import():
    """The two checks above can fail: a module that is imported is seen."""
    assert loaded_after("import json", ("json",)) == ["json"]
