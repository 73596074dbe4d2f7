"""The jobs of one poll batch: what each request asks (one video by id, one page of an
account's list), queued by the monotonic time of its slot for the batch's threads to take."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Fetch:
    """Ask for one video by id."""

    video_id: str
    list_seen: bool | None = None  # True: a list said it finished; False: the list missed it


@dataclass(frozen=True)
class ListRead:
    """Read one page of an account's list, to answer for ``ids``.

    ``depth`` is how many pages the chain may read in all (this one included) before the ids
    it has not found are fetched by id: enough for every id to be on a page of its own.
    """

    account: str
    ids: tuple[str, ...]
    offset: int = 0
    page: int = 1
    depth: int = 1


Job = Fetch | ListRead


def ids_of(job: Job) -> tuple[str, ...]:
    return (job.video_id,) if isinstance(job, Fetch) else job.ids


class JobQueue:
    """A heap of jobs by start time; ``lock`` is the batch's own, so that the queue and the
    batch's state change together."""

    def __init__(self, lock: threading.Lock) -> None:
        self.wake = threading.Condition(lock)
        self.stop = threading.Event()
        self.jobs: list[tuple[float, int, Job]] = []  # a heap, by monotonic start time
        self.order = itertools.count()
        self.running = 0

    def push(self, at: float, job: Job) -> None:
        with self.wake:
            heapq.heappush(self.jobs, (at, next(self.order), job))
            self.wake.notify_all()

    def next_job(self) -> tuple[float, Job] | None:
        """The next job once its time has come; None when all is done or stopped."""
        with self.wake:
            while not self.stop.is_set():
                if not self.jobs:
                    if self.running == 0:
                        return None
                    self.wake.wait(0.5)  # a running job may still add follow-ups
                    continue
                at = self.jobs[0][0]
                wait = at - time.monotonic()
                if wait > 0:
                    self.wake.wait(min(wait, 0.5))  # an earlier job may arrive meanwhile
                    continue
                at, _, job = heapq.heappop(self.jobs)
                self.running += 1
                return at, job
            return None

    def finished(self) -> None:
        with self.wake:
            self.running -= 1
            self.wake.notify_all()

    def halt(self) -> None:
        self.stop.set()
        with self.wake:
            self.wake.notify_all()

    def take_late(self, job: Job, tolerance: float) -> list[Job]:
        """``job`` and every queued job already more than ``tolerance`` past its slot."""
        now = time.monotonic()
        with self.wake:
            late = [entry for entry in self.jobs if entry[0] + tolerance < now]
            if late:
                self.jobs = [entry for entry in self.jobs if entry[0] + tolerance >= now]
                heapq.heapify(self.jobs)
        return [job] + [j for _, _, j in late]
