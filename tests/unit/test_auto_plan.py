"""``--concurrency auto``'s choice: cores x measured cost per input → processes x threads x batch."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from workers.boot.auto_plan import BATCH_COMPUTE_BUDGET_MS, ModelCost, best_batch, choose_plan
from workers.boot.cli import add_worker_arguments
from workers.boot.cores import available_cores, cgroup_cpu_quota

#: digits fp32 as measured on a 2-core Xeon: 0.03 ms at batch 1, 0.011 at 32.
DIGITS = ModelCost("digits:fp32", {1: 0.030, 2: 0.022, 4: 0.017, 8: 0.014, 16: 0.012, 32: 0.011, 64: 0.0105})
#: mobilenet_v2 fp32: 5.6 ms at batch 1, and 2 threads run it 1.8x faster.
MOBILENET = ModelCost(
    "mobilenet_v2:fp32", {1: 5.6, 2: 5.4, 4: 5.3, 8: 5.3}, batch1_ms_by_threads={1: 5.6, 2: 3.1, 4: 1.9}
)


@pytest.mark.parametrize("cores", [1, 2, 8, 64])
def test_a_light_model_gets_one_single_thread_process_per_core_and_a_big_batch(cores: int) -> None:
    plan = choose_plan(cores, [DIGITS])
    assert (plan.processes, plan.threads) == (cores, 1)
    assert plan.max_batch_size is not None and plan.max_batch_size >= 32
    assert "light" in plan.reason and "digits:fp32" in plan.reason


def test_a_heavy_model_that_scales_gets_fewer_processes_with_more_threads() -> None:
    plan = choose_plan(8, [MOBILENET])
    # 4 threads: 5.6 / 1.9 = 2.9x (74%, under 75%); 2 threads: 1.8x (90%).
    assert (plan.processes, plan.threads) == (4, 2)
    assert "heavy" in plan.reason and "2 threads run it 1.8x faster" in plan.reason
    assert plan.max_batch_size is not None
    # A batch's call stays within the budget on the chosen threads.
    assert plan.max_batch_size * MOBILENET.per_input_ms[plan.max_batch_size] / 1.8 <= BATCH_COMPUTE_BUDGET_MS


def test_a_heavy_model_on_two_cores_runs_one_process_with_both() -> None:
    plan = choose_plan(2, [MOBILENET])
    assert (plan.processes, plan.threads) == (1, 2)


def test_a_heavy_model_whose_threads_barely_help_gets_processes_instead() -> None:
    poor = ModelCost("m:fp32", {1: 4.0, 2: 4.0, 4: 4.0}, batch1_ms_by_threads={1: 4.0, 2: 3.6})
    plan = choose_plan(4, [poor])
    assert (plan.processes, plan.threads) == (4, 1)
    assert "only 1.1x one thread's speed" in plan.reason


def test_a_heavy_model_whose_threads_were_not_measured_gets_single_thread_processes() -> None:
    tf = ModelCost(
        "m:savedmodel", {1: 4.0, 2: 4.0}, threads_skipped="tensorflow sets its threads once per process"
    )
    plan = choose_plan(4, [tf])
    assert (plan.processes, plan.threads) == (4, 1) and "threads not measured" in plan.reason


def test_batch_stays_within_the_compute_budget() -> None:
    slow = ModelCost("slow:fp32", {1: 10.0, 2: 9.0, 4: 8.0})  # 4 x 8 = 32 ms: over 25
    assert best_batch(slow) == 2


def test_the_smallest_batch_near_the_best_cost_wins() -> None:
    # 32 and 64 cost nearly the same per job: 32, since the bigger one only adds latency.
    flat = ModelCost("flat:fp32", {1: 0.05, 32: 0.01, 64: 0.0099})
    assert best_batch(flat) == 32


def test_given_threads_and_batch_size_are_kept() -> None:
    plan = choose_plan(8, [DIGITS], threads=2, max_batch_size=8)
    assert (plan.processes, plan.threads, plan.max_batch_size) == (4, 2, 8)
    assert "--threads 2 given" in plan.reason and "--max-batch-size 8 given" in plan.reason


def test_tuned_batch_sizes_are_left_to_the_models() -> None:
    tuned = ModelCost("digits:fp32", DIGITS.per_input_ms, tuned_batch=16)
    plan = choose_plan(2, [tuned])
    assert plan.max_batch_size is None and "tune --apply" in plan.reason


def test_the_heaviest_model_decides_and_different_best_batches_are_left_to_each_model() -> None:
    plan = choose_plan(2, [DIGITS, MOBILENET])
    assert plan.threads == 2 and plan.processes == 1
    assert best_batch(DIGITS, 1.8) != best_batch(MOBILENET, 1.8)
    assert plan.max_batch_size is None and "differ" in plan.reason


def test_models_with_the_same_best_batch_share_it() -> None:
    int8 = ModelCost("digits:int8", {k: v * 1.5 for k, v in DIGITS.per_input_ms.items()})
    plan = choose_plan(2, [DIGITS, int8])
    assert plan.max_batch_size == best_batch(DIGITS) == best_batch(int8)


def test_fractional_and_unmeasured() -> None:
    assert choose_plan(1.5, [DIGITS]).processes == 1
    skipped = ModelCost("dyn:fp32", {}, skipped="a dynamic input shape")
    plan = choose_plan(4, [skipped])
    assert (plan.processes, plan.threads, plan.max_batch_size) == (4, 1, None)
    assert "dynamic input shape" in plan.reason


def test_cost_round_trips_through_json_keys() -> None:
    import json

    back = ModelCost.from_dict(json.loads(json.dumps(MOBILENET.to_dict())))
    assert back == MOBILENET


def test_cores_are_capped_by_a_cgroup_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path, proc) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, proc) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("1:cpu:/\n")
    assert cgroup_cpu_quota(v1, proc) == 2.0
    assert available_cores(lambda: 8, lambda: 2.0) == 2.0
    assert available_cores(lambda: 2, lambda: None) == 2.0
    assert available_cores(lambda: 4, lambda: 0.5) == 1.0


def test_concurrency_option_takes_a_number_or_auto() -> None:
    parser = add_worker_arguments(argparse.ArgumentParser())
    auto = parser.parse_args(["--concurrency", "auto"])
    assert auto.auto_concurrency and auto.concurrency is None
    three = parser.parse_args(["--concurrency", "3"])
    assert not three.auto_concurrency and three.concurrency == 3
    assert not parser.parse_args([]).auto_concurrency
    with pytest.raises(SystemExit):
        parser.parse_args(["--concurrency", "many"])


def test_tune_shows_autos_choice_and_its_reason_beside_what_it_measured() -> None:
    from ops.bench.tune import auto_lines

    plan = choose_plan(2, [DIGITS])
    result = {
        "model": "digits",
        "recommended": {"variant": "fp32", "max_batch_size": 8, "threads": 1},
        "auto": {"cores": 2.0, "plans": {"digits:fp32": plan.to_dict()}},
    }
    text = "\n".join(auto_lines(result))
    assert "--concurrency auto on this machine (2 cores)" in text
    assert "digits:fp32: 2 process(es) x 1 thread(s), batch 32" in text
    assert f"why: {plan.reason}" in text
    assert "best at batch 8, 1 thread(s) (auto would pick batch 32)" in text
    assert auto_lines({"model": "digits", "recommended": None}) == []
