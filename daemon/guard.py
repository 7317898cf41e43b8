"""The engine's one lock and the irreversible-step guard.

:class:`EngineGuard` serialises every state change on the machine (install,
activate, cancel, and :meth:`livefw.engine.Engine.exclusive`): one holder at a time,
the others queued in order, or refused at once (a kexec) with what is in flight and
what waits, in words. It also counts the irreversible steps in flight: SIGTERM
waits for them (:meth:`EngineGuard.wait_idle`) and the daemon holds the logind
``shutdown:sleep`` inhibitor meanwhile (``on_irreversible``). docs/architecture.md,
"Engine entry points", says which entry point waits and which is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from livefw.errors import Busy

__all__ = ["EngineGuard"]

log = structlog.get_logger("livefw.engine")


class EngineGuard:
    """The engine lock, what holds and waits for it, and the irreversible steps.

    Attributes:
        generation: how many operations have held the lock; a plan made at another
            count is checked again before it runs (livefw.planner).
        on_irreversible: called with True when the first irreversible step starts,
            False after the last one ends (the daemon takes a logind inhibitor).
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        #: what holds the lock ("install of PFRU code injection") and since when
        #: (monotonic), and what waits for it, in order: a refused kexec names them.
        self._holder: tuple[str, float] | None = None
        self._queued: list[str] = []
        self.generation = 0
        self._irreversible = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.on_irreversible: Callable[[bool], Any] | None = None

    @property
    def busy(self) -> bool:
        """An operation holds the lock."""
        return self._lock.locked()

    @contextlib.asynccontextmanager
    async def held(self, what: str, *, wait: bool = True) -> AsyncIterator[None]:
        """Take the lock for ``what``; ``wait=False`` refuses when it is taken.

        Raises:
            Busy: ``wait`` is False and an operation holds the lock or waits for it.
        """
        if not wait and (self._lock.locked() or self._queued):
            raise Busy(
                f"{what} refused: {self.in_flight()}, and it must not be cut short; try "
                "again when it has finished (`livefw get-devices` shows its progress)"
            )
        self._queued.append(what)
        try:
            await self._lock.acquire()
        finally:
            self._queued.remove(what)
        self._holder = (what, time.monotonic())
        try:
            yield
        finally:
            self._holder = None
            self.generation += 1
            self._lock.release()

    def in_flight(self) -> str:
        """What holds the lock and what waits for it, for a person to read."""
        parts = []
        if self._holder is not None:
            what, since = self._holder
            parts.append(f"{what} is in flight (for {time.monotonic() - since:.0f} s)")
        if self._queued:
            parts.append(f"{len(self._queued)} more waiting ({', '.join(self._queued)})")
        return "; ".join(parts) or "nothing is in flight"

    @contextlib.asynccontextmanager
    async def irreversible(self, what: str) -> AsyncIterator[None]:
        """Mark a step that must not be interrupted by a shutdown."""
        self._irreversible += 1
        if self._irreversible == 1:
            self._idle.clear()
            await self._tell(True)
        log.debug("irreversible_begin", what=what)
        try:
            yield
        finally:
            self._irreversible -= 1
            if self._irreversible == 0:
                self._idle.set()
                await self._tell(False)

    async def _tell(self, active: bool) -> None:
        if self.on_irreversible is not None:
            result = self.on_irreversible(active)
            if asyncio.iscoroutine(result):
                await result

    async def wait_idle(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until no irreversible step is in flight."""
        if self._idle.is_set():
            return
        log.warning("shutdown_waiting", seconds=timeout, steps=self._irreversible)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.error("shutdown_timeout", steps=self._irreversible)
