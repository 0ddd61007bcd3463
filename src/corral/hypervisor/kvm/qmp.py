"""QMP through the ``qemu.qmp`` library: one connection per VM, events to listeners.

Layer: driver transport. :class:`Monitor` wraps one :class:`QMPClient` and
turns every library error into a :class:`~corral.errors.HypervisorError`
that names the instance and the command. A task per connection drains
events into callbacks (user shutdown detection, ``DEVICE_DELETED`` waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError
from qemu.qmp.protocol import Runstate

from corral.errors import ECode, HypervisorError

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], Awaitable[None]]

# qemu.qmp logs every connection attempt and disconnect at INFO/WARNING;
# the node daemon reports what matters itself.
logging.getLogger("qemu.qmp").setLevel(logging.ERROR)


class Monitor:
    """One QMP connection to one QEMU process."""

    def __init__(self, name: str, socket_path: str, on_event: EventCallback | None = None) -> None:
        self.name = name
        self.socket_path = socket_path
        self._client = QMPClient(name)
        self._listener = EventListener()
        self._client.register_listener(self._listener)
        self._on_event = on_event
        self._pump: asyncio.Task[None] | None = None
        self._waiters: list[tuple[str, Callable[[dict[str, Any]], bool], asyncio.Future[None]]] = []
        self._commands: frozenset[str] | None = None
        self._fd_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING

    async def connect(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self._client.connect(self.socket_path), timeout)
        except (TimeoutError, QMPError, OSError) as err:
            raise HypervisorError(
                f"cannot connect to the QMP socket of {self.name} ({self.socket_path}): "
                f"{err or type(err).__name__}",
                ECode.STATE,
            ) from None
        self._pump = asyncio.create_task(self._drain(), name=f"qmp-events-{self.name}")

    async def _drain(self) -> None:
        async for event in self._listener:
            name = str(event["event"])
            data = event.get("data", {})
            data = data if isinstance(data, dict) else {}
            for waiter in list(self._waiters):
                ev, pred, fut = waiter
                if ev == name and not fut.done() and pred(data):
                    fut.set_result(None)
            if self._on_event is not None:
                try:
                    await self._on_event(name, data)
                except Exception:  # a callback bug must not stop event delivery
                    log.exception("QMP event handler for %s failed", self.name)

    async def execute(
        self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        try:
            return await asyncio.wait_for(self._client.execute(cmd, args), timeout)
        except ExecuteError as err:
            raise HypervisorError(
                f"QMP {cmd} on {self.name} failed: {err.error.error.desc}", ECode.ENVIRON
            ) from None
        except TimeoutError:
            raise HypervisorError(f"QMP {cmd} on {self.name} timed out", ECode.ENVIRON) from None
        except (QMPError, OSError, EOFError) as err:
            raise HypervisorError(
                f"QMP {cmd} on {self.name}: connection lost ({err or type(err).__name__})",
                ECode.STATE,
            ) from None

    async def commands(self) -> frozenset[str]:
        """The QMP commands this QEMU offers (``query-commands``, asked once per connection)."""
        if self._commands is None:
            res = await self.execute("query-commands")
            self._commands = frozenset(str(c.get("name")) for c in res if isinstance(c, dict))
        return self._commands

    def send_fd(self, fd: int) -> None:
        """Queue ``fd`` for the next command (``getfd``/``add-fd``) via SCM_RIGHTS."""
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError) as err:
            raise HypervisorError(f"cannot pass a file descriptor to {self.name}: {err}") from None

    async def execute_fd(self, cmd: str, args: dict[str, Any], fd: int) -> Any:
        """Pass ``fd`` with SCM_RIGHTS and run ``cmd`` (``getfd``/``add-fd``) right after.

        One at a time: QEMU hands the received descriptor to the next command
        that takes one, so two concurrent passes could swap descriptors.
        """
        async with self._fd_lock:
            self.send_fd(fd)
            return await self.execute(cmd, args)

    def expect(
        self, event: str, pred: Callable[[dict[str, Any]], bool] = lambda d: True
    ) -> asyncio.Future[None]:
        """A future set when ``event`` (matching ``pred``) arrives; register before acting."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (event, pred, fut)
        self._waiters.append(entry)
        fut.add_done_callback(lambda _f: self._waiters.remove(entry))
        return fut

    async def disconnected(self) -> None:
        """Return when the connection ends (QEMU exited or closed the socket)."""
        while self._client.runstate not in (Runstate.IDLE, Runstate.DISCONNECTING):
            await self._client.runstate_changed()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        for _ev, _pred, fut in list(self._waiters):
            if not fut.done():
                fut.cancel()


class MonitorPool:
    """The node daemon's monitors, one per running instance, reconnected on demand."""

    def __init__(self, on_event: Callable[[str], EventCallback] | None = None) -> None:
        self._mons: dict[str, Monitor] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_event = on_event

    async def get(self, name: str, socket_path: str, timeout: float = 5.0) -> Monitor:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            mon = self._mons.get(name)
            if mon is not None and mon.connected and mon.socket_path == socket_path:
                return mon
            if mon is not None:
                await mon.close()
            cb = self._on_event(name) if self._on_event else None
            mon = Monitor(name, socket_path, cb)
            await mon.connect(timeout)
            self._mons[name] = mon
            return mon

    def cached(self, name: str) -> Monitor | None:
        mon = self._mons.get(name)
        return mon if mon is not None and mon.connected else None

    async def drop(self, name: str) -> None:
        mon = self._mons.pop(name, None)
        if mon is not None:
            await mon.close()

    async def close_all(self) -> None:
        for name in list(self._mons):
            await self.drop(name)
