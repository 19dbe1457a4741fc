"""``DeadlineConnection._fit_timeout``: every read ends by the call's deadline (not before
it, not more than ``SLACK_S`` after), and the socket's timeout is changed only when it
must be (``settimeout`` lets go of the GIL)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis

from producers import bounded
from producers.bounded import MIN_WAIT_S, SLACK_S, DeadlineConnection


class CountingSocket:
    """A socket's timeout, with a count of the changes made to it."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.changes = 0

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.timeout = value
        self.changes += 1


@pytest.fixture
def conn() -> Iterator[DeadlineConnection]:
    c = DeadlineConnection(host="localhost", socket_timeout=5.0)
    c._sock = CountingSocket(5.0)  # type: ignore[attr-defined]  # as connect leaves it
    yield c
    c._sock = None  # type: ignore[attr-defined]
    bounded._call.deadline = None


def _fit(conn: DeadlineConnection, left: float | None, sending: bool = False) -> CountingSocket:
    bounded._call.deadline = None if left is None else time.monotonic() + left
    conn._fit_timeout(sending=sending)
    sock: CountingSocket = conn._sock  # type: ignore[attr-defined]
    return sock


def test_listener_reads_change_the_timeout_only_when_someone_else_did(conn: DeadlineConnection) -> None:
    assert _fit(conn, None).changes == 0
    conn._sock.timeout = 0.0  # type: ignore[attr-defined]  # as redis-py's can_read(timeout=0) may leave it
    sock = _fit(conn, None)
    assert (sock.changes, sock.timeout) == (1, 5.0)


def test_a_read_in_a_call_ends_by_its_deadline_not_before(conn: DeadlineConnection) -> None:
    sock = _fit(conn, 0.2)
    assert sock.timeout is not None and 0.19 <= sock.timeout <= 0.2 + SLACK_S
    sock = _fit(conn, 0.0)
    assert sock.timeout is not None and MIN_WAIT_S <= sock.timeout <= MIN_WAIT_S + SLACK_S


def test_reads_of_calls_with_the_same_bound_change_nothing(conn: DeadlineConnection) -> None:
    sock = _fit(conn, 4.0)
    assert sock.changes == 1
    for _ in range(100):
        sock = _fit(conn, 4.0)
        assert sock.timeout is not None and 4.0 - 0.01 <= sock.timeout <= 4.0 + SLACK_S
    assert sock.changes == 1


def test_a_call_longer_than_the_socket_timeout_reads_with_the_socket_timeout(
    conn: DeadlineConnection,
) -> None:
    sock = _fit(conn, 30.0)
    assert (sock.changes, sock.timeout) == (0, 5.0)


def test_nothing_is_sent_with_no_time_left(conn: DeadlineConnection) -> None:
    with pytest.raises(redis.TimeoutError):
        _fit(conn, -1.0, sending=True)


def test_a_real_socket_gets_the_timeout(conn: DeadlineConnection) -> None:
    a, b = socket.socketpair()
    try:
        a.settimeout(5.0)
        conn._sock = a  # type: ignore[attr-defined]
        _fit(conn, 0.5)
        assert 0.5 - 0.01 <= (a.gettimeout() or 0) <= 0.5 + SLACK_S
    finally:
        a.close()
        b.close()
