"""Which Redis list names ``inferq flower`` counts as model queues."""

from __future__ import annotations

import pytest

from ops.model_queues import model_queue_of
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists


def test_every_priority_list_of_a_model_queue_maps_to_the_queue() -> None:
    queue = queue_name("digits", "int8")
    assert {model_queue_of(lst) for lst in queue_lists(queue)} == {queue}


@pytest.mark.parametrize(
    "name",
    [
        "inferq.default",  # the app's default queue: no model
        "inferq.worker.inferq-12@host",  # a worker's private control queue
        "inferq.digits.int8.extra",  # not model.variant
        "inferq.digits.",
        "inferq..int8",
        "other.digits.int8",
        "_kombu.binding.inferq.digits.int8",
    ],
)
def test_names_that_are_not_model_queues_are_ignored(name: str) -> None:
    assert model_queue_of(name) is None
