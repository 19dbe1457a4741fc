"""The sync ``ResultListener``'s watched ids and whether each has arrived.

One entry per watched id: ``False`` (watched, nothing yet, nobody blocked on it),
``True`` (arrived), or the ``Latch`` (``producers/latch.py``) a waiter blocks on until
it arrives. Most of a bulk submission's results arrive before anyone waits on them, so
a wake-up made up front for each id was waste: an ``Event`` each cost ~2 µs (a tenth of
the client's GIL time for 30,000 inputs), and a small object each was still one more for
the garbage collector to walk, as long as the id was watched (full collections took a
fifth of a bulk client's CPU). A bool costs nothing; the ``Latch`` is made only for a
waiter that has to block. The listener reads and changes entries only under its lock,
so a wake-up is never lost between a waiter's look and its sleep.
"""

from __future__ import annotations

from producers.latch import Latch


class Flags(dict[str, "bool | Latch"]):
    """Watched ids: ``False``, ``True`` (arrived) or a blocked waiter's ``Latch``."""

    def is_set(self, job_id: str) -> bool:
        """Arrived (an id not watched is not)."""
        return self.get(job_id) is True

    def awaited(self, job_id: str) -> bool:
        """Whether a waiter is blocked on it (``arm`` installed its ``Latch``)."""
        return isinstance(self.get(job_id), Latch)

    def arrive(self, job_id: str) -> bool:
        """Mark a watched id arrived and wake its waiter; False when it is not watched or
        already arrived (nothing done)."""
        flag = self.get(job_id)
        if flag is None or flag is True:
            return False
        if flag is not False:
            flag.set()
        self[job_id] = True
        return True

    def arm(self, job_id: str, latch: Latch) -> Latch | None:
        """The ``Latch`` to block on until the id arrives: ``latch`` (made by the caller
        before it took the lock: 64 waiters and the listener thread contend for that lock,
        and nothing runs under it that need not), unless another waiter's is already
        there; None when it arrived already or is not watched."""
        flag = self.get(job_id)
        if flag is None or flag is True:
            return None
        if flag is False:
            self[job_id] = latch
            return latch
        return flag

    def drop(self, job_id: str) -> None:
        """Stop watching it; a blocked waiter wakes (and finds nothing arrived)."""
        flag = self.pop(job_id, None)
        if isinstance(flag, Latch):
            flag.set()

    def wake_all(self) -> None:
        """Mark every id arrived and wake every waiter (the listener failed: they look)."""
        for job_id, flag in self.items():
            if isinstance(flag, Latch):
                flag.set()
            self[job_id] = True
