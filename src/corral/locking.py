"""The lock manager: levels, shared/exclusive, acquired in a fixed order.

Layer: master core (imports ``errors``). Levels are Ganeti's: cluster (the
"big Ganeti lock") < instance < node group < node < node resources <
network. A logical unit declares what it needs per level; the processor
acquires level by level in that order and, inside a level, names in sorted
order — so deadlock is impossible by construction.

Inside a level, a *set lock* guards the level as a whole with multi-granularity
modes: holders of individual names take it in intention mode (IS for shared
names, IX for exclusive names); "all names" takes it in S or X. Thus "all
instances, exclusive" waits for every single-instance holder, while two jobs
on different instances never touch each other.

All of this runs on the master's event loop; waiting is an ``await``.
Waiters are served FIFO by priority (lower number first, Ganeti's order).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from corral.errors import LockError


class Level(enum.IntEnum):
    CLUSTER = 0
    INSTANCE = 1
    NODEGROUP = 2
    NODE = 3
    NODE_RES = 4
    NETWORK = 5


class Mode(enum.Enum):
    IS = "IS"
    IX = "IX"
    S = "S"
    X = "X"


_COMPAT: dict[Mode, set[Mode]] = {
    Mode.IS: {Mode.IS, Mode.IX, Mode.S},
    Mode.IX: {Mode.IS, Mode.IX},
    Mode.S: {Mode.IS, Mode.S},
    Mode.X: set(),
}

BGL = "BGL"
ALL = None  # "every name at this level"


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    owner: str = field(compare=False)
    mode: Mode = field(compare=False)
    fut: asyncio.Future[None] = field(compare=False)


class _Lock:
    """One lock with the four modes; grants in (priority, arrival) order."""

    __slots__ = ("holders", "name", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.holders: dict[str, Mode] = {}
        self.waiters: list[_Waiter] = []

    def _compatible(self, owner: str, mode: Mode) -> bool:
        return all(mode in _COMPAT[m] for o, m in self.holders.items() if o != owner)

    def try_grant(self, owner: str, mode: Mode) -> bool:
        if not self.waiters and self._compatible(owner, mode):
            self.holders[owner] = mode
            return True
        return False

    def release(self, owner: str) -> None:
        self.holders.pop(owner, None)
        self._wake()

    def cancel(self, waiter: _Waiter) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self._wake()

    def _wake(self) -> None:
        # Grant waiters in order while they fit; stop at the first that does
        # not, so an exclusive waiter is not starved by a stream of sharers.
        while self.waiters:
            w = self.waiters[0]
            if w.fut.done():
                self.waiters.pop(0)
                continue
            if not self._compatible(w.owner, w.mode):
                break
            self.waiters.pop(0)
            self.holders[w.owner] = w.mode
            w.fut.set_result(None)


class LockManager:
    def __init__(self) -> None:
        self._locks: dict[tuple[Level, str], _Lock] = {}
        self._seq = itertools.count()
        self.owned: dict[str, dict[Level, dict[str, Mode]]] = {}

    def _lock(self, level: Level, name: str) -> _Lock:
        key = (level, name)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = _Lock(name)
        return lock

    async def _acquire_one(
        self, owner: str, level: Level, name: str, mode: Mode, priority: int
    ) -> None:
        lock = self._lock(level, name)
        if not lock.try_grant(owner, mode):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            w = _Waiter(priority, next(self._seq), owner, mode, fut)
            lock.waiters.append(w)
            lock.waiters.sort()
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    lock.release(owner)
                else:
                    lock.cancel(w)
                raise
        self.owned.setdefault(owner, {}).setdefault(level, {})[name] = mode

    async def acquire(
        self, owner: str, level: Level, names: Iterable[str] | None, shared: bool, priority: int = 0
    ) -> None:
        """Acquire ``names`` (or all, if ``None``) at one level."""
        held = self.owned.get(owner, {})
        if any(lv > level for lv in held):
            raise LockError(f"lock order violation: {owner} holds a level above {level.name}")
        set_name = f"[{level.name.lower()}]"
        if names is None:
            await self._acquire_one(owner, level, set_name, Mode.S if shared else Mode.X, priority)
            return
        await self._acquire_one(owner, level, set_name, Mode.IS if shared else Mode.IX, priority)
        for name in sorted(set(names)):
            await self._acquire_one(owner, level, name, Mode.S if shared else Mode.X, priority)

    def release(self, owner: str, level: Level | None = None) -> None:
        """Release everything ``owner`` holds (at ``level``, or at every level)."""
        held = self.owned.get(owner)
        if not held:
            return
        for lv in sorted(list(held), reverse=True):
            if level is not None and lv != level:
                continue
            for name in held.pop(lv):
                lock = self._locks.get((lv, name))
                if lock is not None:
                    lock.release(owner)
                    if not lock.holders and not lock.waiters:
                        del self._locks[(lv, name)]
        if not held:
            self.owned.pop(owner, None)

    def holders(self, level: Level, name: str) -> dict[str, Mode]:
        lock = self._locks.get((level, name))
        return dict(lock.holders) if lock else {}

    def info(self) -> list[tuple[str, str, list[str], int]]:
        """(level, name, holders, waiter count) for every live lock (``gnt-debug locks``)."""
        return [
            (
                lv.name.lower(),
                name,
                [f"{o}:{m.value}" for o, m in lk.holders.items()],
                len(lk.waiters),
            )
            for (lv, name), lk in sorted(self._locks.items())
        ]
