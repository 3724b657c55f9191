"""One heavy job at a time: the server's first-come, first-served line (``JOBS``) that decompositions, probe
fits, reports and the demo wait in, each able to say its place ("2nd in line")."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class JobQueue:
    """A first-come, first-served line for heavy jobs (decompositions, probes): ``slots`` run at a time,
    the others wait and can say their place. One per process (``JOBS``), shared by all sessions."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self._cond = threading.Condition()
        self._line: list[object] = []  # waiting tickets, first come first
        self._running: list[object] = []

    def place(self, ticket: object) -> int:
        """1 while the ticket's job runs; otherwise 1 + the jobs ahead of it (running or waiting)."""
        with self._cond:
            if ticket in self._running:
                return 1
            return len(self._running) + self._line.index(ticket) + 1

    def __len__(self) -> int:
        with self._cond:
            return len(self._running) + len(self._line)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None, poll: float = 0.5) -> Iterator[None]:
        """Wait for a slot (calling ``on_wait(place)`` about every ``poll`` seconds meanwhile), hold it for
        the ``with`` block, then give it to the next in line. Leaving early (an exception in ``on_wait``,
        e.g. the page was left) gives up the place in line."""
        ticket = object()
        with self._cond:
            self._line.append(ticket)
        try:
            while True:
                with self._cond:
                    if len(self._running) < self.slots and self._line[0] is ticket:
                        self._line.pop(0)
                        self._running.append(ticket)
                        break
                    place = len(self._running) + self._line.index(ticket) + 1
                if on_wait is not None:
                    on_wait(place)
                with self._cond:
                    if not (len(self._running) < self.slots and self._line[0] is ticket):
                        self._cond.wait(poll)
            yield
        finally:
            with self._cond:
                if ticket in self._line:
                    self._line.remove(ticket)
                if ticket in self._running:
                    self._running.remove(ticket)
                self._cond.notify_all()


JOBS = JobQueue(1)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th... 11th, 12th, 13th... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
