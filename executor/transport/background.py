"""A daemon thread that waits on a condition until it is closed: the progress thread
(:class:`~executor.transport.progress.ThreadProgress`) and the watchdog
(:class:`~executor.engine.watchdog.Watchdog`) are each one.

The condition is the one lock the thread and its owner share: every change the thread
waits for is made under it and notified, so the thread sleeps instead of polling.
"""

from __future__ import annotations

import threading

__all__ = ["Background"]


class Background:
    """Runs :meth:`_loop` on a daemon thread named ``name``; :meth:`close` ends and joins it.
    A subclass sets up what its loop reads, then calls :meth:`_start`."""

    def __init__(self, name: str):
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._thread.join()
