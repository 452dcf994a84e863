"""A progress thread for non-blocking MPI requests.

MPICH moves a large non-blocking transfer only while some MPI call runs on the rank
(rendezvous hand-shakes and the chunked shared-memory copy both need it), so an Isend
posted before a long compute would otherwise wait for the next Wait and no transfer would
overlap compute (REFERENCE.md: 256 MiB beside 75 ms of compute took the sum of both).
This thread calls ``Testsome`` on the outstanding requests every ``interval`` seconds;
torch's kernels and ``time.sleep`` release the GIL, so it runs beside compute. It needs
MPI_THREAD_MULTIPLE, which mpi4py requests by default.

A request is completed by exactly one thread (MPI forbids two): the progress thread,
or a caller of :meth:`Progress.wait`, which takes its request out of the polled set and
then polls it itself (``Test`` and a short sleep). Waiting in ``MPI_Wait`` instead would
spin a core, and with more ranks than cores (p = 4 on this 2-core machine) the spinning
rank steals the core its sender needs; waiting for the progress thread to report would
add a second thread wake-up to every completion. Both threads get a 1 us timer slack
(Linux rounds short sleeps up by 50 us by default), so a completion is seen within
about ``interval``.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time

from mpi4py import MPI

__all__ = ["Pending", "Progress"]


class Pending:
    """One outstanding request and, once known, the perf_counter time it completed."""

    __slots__ = ("request", "done_at")

    def __init__(self, request: MPI.Request):
        self.request = request
        self.done_at: float | None = None


class Progress:
    """Polls outstanding requests in a daemon thread until :meth:`close`."""

    def __init__(self, interval: float = 200e-6, wait_interval: float = 20e-6):
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise RuntimeError("the progress thread needs MPI_THREAD_MULTIPLE; this MPI provides less")
        self.interval = interval  # background polls: rare, so four ranks fit on two cores
        self.wait_interval = wait_interval  # a waiting rank's own polls: prompt
        _tight_timer_slack()  # the calling (main) thread: its polls and compute sleeps
        self._cond = threading.Condition()
        self._pending: list[Pending] = []
        self._running = True
        self._polling = False  # the thread is inside Testsome on a snapshot of _pending
        self._thread = threading.Thread(target=self._loop, name="mpi-progress", daemon=True)
        self._thread.start()

    def add(self, request: MPI.Request) -> Pending:
        item = Pending(request)
        with self._cond:
            self._pending.append(item)
            self._cond.notify_all()
        return item

    def wait(self, item: Pending) -> float:
        """Block until ``item`` completed; return its completion time (perf_counter)."""
        with self._cond:
            while self._polling and item.done_at is None:
                self._cond.wait()  # the thread may be testing this very request right now
            if item.done_at is not None:
                return item.done_at
            self._pending.remove(item)  # from here on only this thread completes it
        request, interval = item.request, self.wait_interval
        while not request.Test():
            time.sleep(interval)
        item.done_at = time.perf_counter()
        return item.done_at

    def wait_all(self, items: list[Pending]) -> float:
        """Block until every item completed; return the last completion time."""
        return max((self.wait(item) for item in items), default=time.perf_counter())

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        _tight_timer_slack()
        while True:
            with self._cond:
                while self._running and not self._pending:
                    self._cond.wait()
                if not self._running:
                    return
                batch, self._polling = list(self._pending), True
            # Outside the lock: one Test may copy a whole large message (ms), and posting
            # new requests must not wait for it.
            done = MPI.Request.Testsome([item.request for item in batch])
            now = time.perf_counter()
            with self._cond:
                for i in done or ():
                    batch[i].done_at = now
                if done:
                    self._pending = [item for item in self._pending if item.done_at is None]
                self._polling = False
                self._cond.notify_all()
            time.sleep(self.interval)


def _tight_timer_slack() -> None:
    """Let this thread's short sleeps end on time: Linux rounds a sleep up by the thread's
    timer slack (50 us by default), which made a 50 us poll interval about 145 us here."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK = 29, in ns
    except (OSError, AttributeError):
        pass
