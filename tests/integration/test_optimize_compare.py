"""``inferq models compare``: each variant measured in its own process; a table, the JSON
and a PNG side by side; agreement and accuracy on the held-out digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.settings import Settings
from tests.helpers.cli import inferq, one_line_error

pytestmark = pytest.mark.integration

FAST = ("--duration", "0.1", "--max-batch", "8")


@pytest.fixture(scope="module")
def compared(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    out = tmp_path_factory.mktemp("compare") / "digits-variants"
    proc = inferq(
        settings,
        "models",
        "compare",
        "digits",
        "--variants",
        "int8,fp16",
        *FAST,
        "--out",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.with_suffix(".json").read_text()), out


def test_the_table_has_a_row_per_variant_with_the_reference_first(compared: tuple[str, dict, Path]) -> None:
    text, _, out = compared
    lines = text.splitlines()
    assert lines[0].startswith("digits on ") and "360 inputs" in lines[0]
    rows = [line.split()[0] for line in lines[3:] if line and not line.startswith("wrote")]
    assert rows == ["fp32", "int8", "fp16"]  # the reference is measured too, first
    assert f"wrote {out}.json, {out}.png" in text


def test_the_json_holds_every_figure_and_int8_meets_the_goal(compared: tuple[str, dict, Path]) -> None:
    _, doc, _ = compared
    by = {v["variant"]: v for v in doc["variants"]}
    assert doc["reference"] == "fp32" and doc["samples"] == 360 and "cores" in doc["machine"]
    for v in by.values():
        assert v["file_bytes"] > 0 and v["load_ms"] > 0 and v["first_run_ms"] > 0
        assert [b["batch"] for b in v["batches"]] == [1, 2, 4, 8]
        assert all(b["calls"] >= 5 and b["p50_ms"] <= b["p99_ms"] for b in v["batches"])
        assert v["best"]["inputs_per_s"] == max(b["inputs_per_s"] for b in v["batches"])
        assert 0 < v["rss_before_load_bytes"] <= v["peak_rss_bytes"] < 1024 * 2**20
        assert v["accuracy"] > 0.9  # the held-out labels are found beside the model
    assert by["fp32"]["agreement"] == [
        {"output": "probs", "top1": 1.0, "max_abs": 0.0, "mean_abs": 0.0, "top1_inputs": 360}
    ]
    assert by["int8"]["file_bytes"] <= 0.30 * by["fp32"]["file_bytes"]
    assert by["int8"]["agreement"][0]["top1"] >= 0.98


def test_each_variants_peak_rss_is_its_own_not_the_comparing_process(settings: Settings) -> None:
    """Measured in a fresh process, and read so that the parent's memory is not inherited
    (``ru_maxrss`` survives ``execve``: with it every child reported the parent's peak)."""
    from workers.models.optimize.compare import compare_variants
    from workers.models.registry import Registry

    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB resident in this (the parent) process
    result = compare_variants(
        Registry(settings.models_dir), "digits", ["fp32", "int8"], samples=16, duration_s=0.05, max_batch=2
    )
    assert ballast.sum() > 0
    for v in result.variants:
        assert 0 < v.rss_before_load_bytes <= v.peak_rss_bytes < 300 * 2**20, (v.variant, v.peak_rss_bytes)


def test_the_plot_is_written_next_to_the_json(compared: tuple[str, dict, Path]) -> None:
    _, _, out = compared
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_flag_prints_the_json_and_says_where_files_went_on_stderr(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "c"
    proc = inferq(
        settings, "models", "compare", "digits", "--variants", "fp32", "--samples", "32", *FAST, "--out", str(out),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [v["variant"] for v in doc["variants"]] == ["fp32"] and doc["samples"] == 32
    assert f"wrote {out}.json" in proc.stderr


def test_an_unknown_variant_is_named(settings: Settings, tmp_path: Path) -> None:
    proc = inferq(settings, "models", "compare", "digits", "--variants", "int3", "--out", str(tmp_path / "c"))
    line = one_line_error(proc, "BadInput")
    assert "digits has no variant int3" in line
