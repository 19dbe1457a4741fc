"""Remote-control messages of inferq's Celery app: JSON, never pickle; jobs stay msgpack."""

from __future__ import annotations

import socket

import pytest
from kombu.serialization import dumps, loads, prepare_accept_content

from tasks.app import create_app
from tasks.connections import connection_options
from tasks.settings import Settings

#: The part of a worker's ``stats`` reply that broke it: kombu echoes the broker's
#: transport options, whose TCP keepalive options are keyed by socket constants (ints).
STATS_PART = {"broker": {"transport_options": connection_options()}}


def test_a_stats_reply_with_int_map_keys_survives_the_control_codec() -> None:
    mailbox = create_app(Settings()).control.mailbox
    ctype, enc, body = dumps(STATS_PART, serializer=mailbox.serializer)
    back = loads(body, ctype, enc, accept=prepare_accept_content(mailbox.accept))
    assert back["broker"]["transport_options"]["socket_keepalive_options"][str(socket.TCP_KEEPIDLE)] == 15


def test_the_task_serializer_alone_could_not_carry_that_reply() -> None:
    # Why the control codec differs from the task codec: msgpack refuses int map keys.
    ctype, enc, body = dumps(STATS_PART, serializer="msgpack")
    with pytest.raises(Exception, match="strict_map_key"):
        loads(body, ctype, enc, accept=prepare_accept_content(["msgpack"]))


def test_control_is_json_and_accepts_no_pickle_while_jobs_stay_msgpack() -> None:
    app = create_app(Settings())
    assert app.control.mailbox.serializer == "json"
    accepted = prepare_accept_content(app.control.mailbox.accept)
    assert accepted == {"application/json", "application/x-msgpack"}  # never pickle
    assert app.conf.task_serializer == "msgpack"
