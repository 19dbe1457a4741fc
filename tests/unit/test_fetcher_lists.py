"""The order in which a worker reads its queue lists: priority first, then fairness."""

from __future__ import annotations

import redis

from tasks.kombu_layout import PRIORITY_SEP, queue_lists
from workers.broker.fetcher import Fetcher


def fetcher(queues: list[str]) -> Fetcher:
    return Fetcher(redis.Redis(), queues, lambda _: None, capacity=1)  # never connects


def test_every_priority_step_of_every_queue_is_read_before_the_next_step() -> None:
    lists = fetcher(["inferq.a.x", "inferq.b.y"])._next_lists()
    steps = [0 if PRIORITY_SEP not in name else int(name.rsplit(PRIORITY_SEP, 1)[1]) for name in lists]
    assert steps == sorted(steps) == [0, 0, 3, 3, 6, 6, 9, 9]
    assert sorted(lists) == sorted(queue_lists("inferq.a.x") + queue_lists("inferq.b.y"))


def test_queues_take_turns_at_going_first_so_one_backlog_cannot_starve_another() -> None:
    f = fetcher(["inferq.a.x", "inferq.b.y", "inferq.c.z"])
    firsts = [f._next_lists()[0] for _ in range(6)]
    assert sorted(set(firsts)) == ["inferq.a.x", "inferq.b.y", "inferq.c.z"]
    assert firsts[:3] != firsts[1:4]  # it moves on every fetch


def test_a_single_queue_reads_its_lists_in_kombu_order() -> None:
    assert fetcher(["inferq.a.x"])._next_lists() == queue_lists("inferq.a.x")
