"""Ctrl-C in ``bench`` and ``tune``: the first stops the load and still reports; a second quits.

A measurement someone stops is still worth showing: the first Ctrl-C only sets an
event that the load generators and the commands' loops check, so the jobs in flight
are collected, the workers the command started are stopped by the command itself
(they run in sessions of their own, out of the terminal's reach) and the report is
printed, marked as stopped early. A second Ctrl-C raises ``KeyboardInterrupt`` as
usual, for when even that takes too long.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

NOTICE = (
    b"\nstopping: collecting the jobs in flight, then reporting what was measured "
    b"(Ctrl-C again to quit at once)\n"
)


def stop_on_ctrl_c() -> threading.Event:
    """An event the first SIGINT sets; the next SIGINT raises ``KeyboardInterrupt``."""
    stop = threading.Event()

    def first(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.write(2, NOTICE)  # not print(): a handler may run in the middle of another print

    signal.signal(signal.SIGINT, first)
    return stop
