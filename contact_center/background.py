"""Background loops that stop between runs, never inside one.

Cancelling a task while it waits on the database leaves SQLAlchemy resetting a connection in
a cancelled task (a logged traceback, a connection thrown away); so a loop is asked to stop,
finishes the run in progress (for a bounded time) and only then ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class Periodic:
    """Runs ``work()`` every ``interval`` seconds (first at once with ``immediately``) in a
    background task. A failing run is logged by ``work`` itself or here, never ends the loop."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[object]],
        interval: float,
        *,
        immediately: bool = True,
    ) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._immediately = immediately
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a long run should wind up."""
        return self._stopping.is_set()

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        first = self._immediately
        while not self._stopping.is_set():
            if not first:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
                if self._stopping.is_set():
                    return
            first = False
            try:
                await self._work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: run failed", self.name)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Let the run in progress finish (at most ``timeout`` seconds), then end the loop."""
        if self._task is None:
            return
        task, self._task = self._task, None
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning("%s: still running after %.0f s; cancelled", self.name, timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
