"""Heavy jobs that outlive the page that started them.

A decomposition, a probe fit or a report runs in a thread of its own (``BackgroundJobs.start``), waits its
turn in the server's queue (``job_queue.JOBS``), and is filed under its owner's workspace and a kind
("decomposition", "probe", "report"). A page only follows a job: it draws the job's place in line or its
progress until it is over. When the page is reloaded or closed, the job goes on, and the same workspace
(a reload, a second tab) finds it again with ``of``. Nothing here imports Streamlit.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from . import job_queue

WAITING, RUNNING, DONE, FAILED = "waiting", "running", "done", "failed"
log = logging.getLogger(__name__)


class JobBusy(RuntimeError):
    """The workspace already has a job of this kind waiting or running."""


class JobCancelled(RuntimeError):
    """The job's workspace was forgotten: the job stops at its next progress report (or in line)."""


@dataclass
class Job:
    """One heavy job: where it stands, what it has done so far, and how it ended."""

    owner: str  # the workspace's session id: never shown
    kind: str
    what: str  # for people: "decomposition"
    meta: dict = field(default_factory=dict)  # what the page needs to draw it and use its result
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = WAITING
    place: int = 0  # in the server's line while waiting (0: not known yet)
    progress: dict = field(default_factory=dict)  # stage -> {"done", "total", "seconds"}
    result: object = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    collected: bool = False  # a page has shown its result once (a page that found it later need not)
    cancelled: bool = False
    _mark: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def over(self) -> bool:
        return self.state in (DONE, FAILED)

    def check(self) -> None:
        """Raise ``JobCancelled`` once the job was cancelled."""
        if self.cancelled:
            raise JobCancelled(f"your {self.what} was cancelled")

    def waiting(self, place: int) -> None:
        """The queue's ``on_wait``: the job's place in line; a cancelled job leaves the line."""
        self.check()
        self.place = place

    def report(self, stage: str, done: int, total: int) -> None:
        """The ``progress`` callback of the pipeline: a stage's count, and its seconds since the stage began.
        A cancelled job stops here (``JobCancelled``)."""
        self.check()
        now = time.perf_counter()
        entry = self.progress.setdefault(stage, {"begin": self._mark})
        entry.update(done=done, total=total, seconds=now - entry["begin"])
        if done >= total:
            self._mark = now

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is over (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.over:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class BackgroundJobs:
    """The jobs of every workspace in this process, the latest of each kind per workspace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], Job] = {}

    def start(
        self, owner: str, kind: str, what: str, work: Callable[[Callable[[str, int, int], None]], object], meta: dict | None = None
    ) -> Job:
        """Run ``work(progress)`` in a thread of its own once the server's queue gives it its turn; its return
        value becomes the job's result, an exception its error. ``JobBusy`` when one of the kind is not over."""
        with self._lock:
            current = self._jobs.get((owner, kind))
            if current is not None and not current.over:
                raise JobBusy(f"your {what} is still {'running' if current.state == RUNNING else 'waiting'}")
            job = self._jobs[(owner, kind)] = Job(owner, kind, what, dict(meta or {}))
        threading.Thread(target=self._run, args=(job, work), name=f"job-{kind}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Callable[[str, int, int], None]], object]) -> None:
        try:
            with job_queue.JOBS.turn(job.waiting):  # looked up now: tests swap the queue
                job.check()
                job.place, job.state, job._mark = 1, RUNNING, time.perf_counter()
                job.result = work(job.report)
            job.state = DONE
        except Exception as exc:  # whatever stops the job is its owner's to read, on the page
            log.warning("a %s failed: %s", job.what, type(exc).__name__)
            job.error, job.state = str(exc) or type(exc).__name__, FAILED
        finally:
            job.finished = time.time()

    def of(self, owner: str, kind: str) -> Job | None:
        """The workspace's latest job of this kind (over or not), or None."""
        with self._lock:
            return self._jobs.get((owner, kind))

    def active(self, owner: str) -> list[Job]:
        """The workspace's jobs that are waiting or running."""
        with self._lock:
            return [job for (o, _), job in self._jobs.items() if o == owner and not job.over]

    def forget(self, owner: str) -> None:
        """Cancel the workspace's jobs (a running one stops at its next progress report, before it saves
        anything) and drop them from the list."""
        with self._lock:
            for key in [k for k in self._jobs if k[0] == owner]:
                self._jobs.pop(key).cancelled = True


BACKGROUND = BackgroundJobs()
