"""`RequestQueue`: one bound on the requests a server holds, shared by its page and its HTTP API.

A request is admitted (or refused at once with `Busy`) before any model work, then waits for one of `workers`
slots to run. At most `workers + max_queue` requests are held at any time, whichever route they came by; a
request over that is answered "busy, retry after N s" immediately, so a burst neither grows the server's memory
nor slows the requests already in flight (a refusal costs a lock and a counter, no thread and no model work).
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from demo.errors import CaptionerError

DEFAULT_MAX_QUEUE = 32  # requests waiting beyond those running: about a second of work on 2 cores
T = TypeVar("T")


class Busy(CaptionerError):
    """The server holds as many requests as it may: retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestQueue:
    """Admission (`admit`, never blocks) and then a worker slot (`Ticket.run`, blocks until one is free)."""

    def __init__(self, workers: int, max_queue: int = DEFAULT_MAX_QUEUE):
        if workers < 1 or max_queue < 0:
            raise ValueError("workers must be at least 1 and max_queue at least 0")
        self.workers, self.max_queue = workers, max_queue
        self._lock = threading.Lock()
        self._held = 0
        self._slots = threading.Semaphore(workers)
        self._seconds_per_request = 0.1  # a running mean of the work's time: what Retry-After is estimated from
        self.refused = 0

    @property
    def capacity(self) -> int:
        return self.workers + self.max_queue

    def held(self) -> int:
        """Requests admitted and not yet finished (running or waiting)."""
        return self._held

    def admit(self) -> Ticket:
        """A ticket for one request, or `Busy` when the server already holds `capacity` requests."""
        with self._lock:
            if self._held >= self.capacity:
                self.refused += 1
                raise Busy(f"the server is busy ({self._held} requests in hand, at most {self.capacity}: "
                           f"--max-queue {self.max_queue} waiting beyond {self.workers} running); retry shortly",
                           self.retry_after_s())
            self._held += 1
        return Ticket(self)

    def retry_after_s(self) -> int:
        """Seconds until the requests in hand are likely done: when a refused caller may find room."""
        return max(1, math.ceil(self._held * self._seconds_per_request / self.workers))

    def _finished(self, seconds: float | None) -> None:
        with self._lock:
            self._held -= 1
            if seconds is not None:
                self._seconds_per_request += 0.1 * (seconds - self._seconds_per_request)


class Ticket:
    """One admitted request: `run` its work in a worker slot, or `cancel` it (refused later, e.g. a bad body).
    Either gives its place back, once."""

    def __init__(self, queue: RequestQueue):
        self._queue, self._open = queue, True

    def run(self, work: Callable[[], T]) -> T:
        self._require_open()
        with self._queue._slots:
            started = time.perf_counter()
            try:
                return work()
            finally:
                self._open = False
                self._queue._finished(time.perf_counter() - started)

    def cancel(self) -> None:
        if self._open:
            self._open = False
            self._queue._finished(None)

    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError("this ticket's request has already run or been cancelled")
