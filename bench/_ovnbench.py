"""Helpers of bench/ovn_migrate.py: a per-packet pinger, a port's SB timeline, the naive move.

* :class:`Pinger`: ``ping -n -D -i 0.01 -W 1`` from a namespace, every reply
  as (wall time, sequence); :meth:`Pinger.outage` gives the longest silence
  between consecutive replies around a migration and the requests lost.
* :class:`BindingTimeline`: :class:`~corral.network.ovn_sb.BindingWatcher`
  that also dates ``additional-chassis-activated`` (the destination saw the
  RARP), so a silence can be laid against what the SB did meanwhile.
* :class:`NaiveVM`: a raw QEMU (Corral's argv, its own MAC/IP and logical
  port) on ``br-int``, moved the naive way: the destination's tap is plugged
  without ``iface-id``, and the port is bound there (``iface-id`` on the
  destination Interface, NB ``requested-chassis=<dst>``) only once QEMU
  reports the migration ``completed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp import QMPClient

import _kvmbench
from boot import KVM, BenchError, pid_in
from corral import demotools, testguest
from corral import vcluster as vcl
from corral.network import ovs
from corral.network.ovn_nb import NbClient
from corral.network.ovn_sb import BindingState, BindingWatcher
from corral.network.tap import open_tap
from corral.vcluster import net
from migrate import alive

_FINAL = ("completed", "failed", "cancelled")
INT_BRIDGE = "br-int"


# --- pings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """What the pinger saw around one migration (wall times, seconds)."""

    silence: float  # the longest time between two consecutive replies
    gap_start: float  # the reply before that silence
    gap_end: float  # the reply that ended it
    lost: int  # requests never answered (sequence gaps)


class Pinger(demotools.Pinger):
    """``ping -n -D -i <interval> -W 1`` from namespace ``ns``; replies as (wall time, seq)."""

    def __init__(self, ns: str, address: str, interval: float = 0.01) -> None:
        super().__init__(ns, address, interval, extra=("-W", "1"))

    def outage(self, start: float, until: float) -> Outage | None:
        """The silence and losses from the last reply before ``start`` to the first
        after ``until``; ``None`` without replies on both sides.

        A request still unanswered after the window's last reply is in flight,
        not lost: only sequence numbers below it count.
        """
        with self._lock:
            replies = sorted(self.replies)
        before = [r for r in replies if r[0] < start]
        after = [r for r in replies if r[0] > until]
        if not before or not after:
            return None
        window = [r for r in replies if before[-1][0] <= r[0] <= after[0][0]]
        gap, a, b = max((b[0] - a[0], a, b) for a, b in itertools.pairwise(window))
        first, last = max(s for _, s in before), max(s for _, s in window)
        got = {s for _, s in replies}
        lost = sum(1 for s in range(first + 1, last) if s not in got)
        return Outage(silence=gap, gap_start=a[0], gap_end=b[0], lost=lost)


# --- the southbound timeline of one port ------------------------------------------------


@dataclass(frozen=True)
class BindingEvent:
    wall: float  # time.time() when the SB update arrived here
    chassis: str | None
    additional: tuple[str, ...]
    activated: tuple[str, ...]


class BindingTimeline(BindingWatcher):
    """Also records changes of ``additional-chassis-activated`` (the RARP seen)."""

    def __init__(self, remote: str, lport: str) -> None:
        super().__init__(remote, lport)
        self._events: list[BindingEvent] = []
        self._elock = threading.Lock()

    def _record(self, state: BindingState | None) -> None:
        super()._record(state)
        if state is None:
            ev = BindingEvent(time.time(), None, (), ())
        else:
            ev = BindingEvent(time.time(), state.chassis, state.additional_chassis, state.activated)
        with self._elock:
            last = self._events[-1] if self._events else None
            if last is None or (last.chassis, last.additional, last.activated) != (
                ev.chassis,
                ev.additional,
                ev.activated,
            ):
                self._events.append(ev)

    def first(self, after: float, pred: object) -> float | None:
        """Wall time of the first event after ``after`` matching ``pred(event)``."""
        assert callable(pred)
        with self._elock:
            return next((e.wall for e in self._events if e.wall >= after and pred(e)), None)


# --- the naive move: raw QEMU on br-int -------------------------------------------------


@dataclass
class NaiveVM:
    """A raw QEMU with Corral's argv on ``br-int``; one running copy at a time."""

    guest: testguest.GuestImage
    machine: str
    dir: Path
    name: str
    mac: str
    ip: str
    lsp: str  # its logical switch port (made by the caller)
    nb: NbClient
    memory_mib: int
    bandwidth_mib: int
    downtime_ms: int
    port: int  # migration TCP port
    serial_speed: int
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    pids: dict[str, int] = field(default_factory=dict)  # node name -> QEMU pid
    taps: dict[str, str] = field(default_factory=dict)  # node name -> tap (OVS port) name

    def ctl(self, node: vcl.VNode, what: str) -> Path:
        return self.dir / node.name / what

    @staticmethod
    def db(node: vcl.VNode) -> str:
        return str(node.paths.host_path(ovs.OVS_DB_SOCK))

    def argv(self, node: vcl.VNode, tap_fd: int, incoming: str | None) -> list[str]:
        """Corral's argv for its instances (as bench/migrate.py's floor), our paths."""

        def c(what: str) -> str:
            return str(self.ctl(node, what))

        kargs = f"quiet corral.ip.{self.mac.replace(':', '')}={self.ip}/24"
        # fmt: off
        argv = [
            KVM, "-name", self.name, "-uuid", self.uuid, "-m", str(self.memory_mib),
            "-smp", "1", "-machine", f"{self.machine},accel=tcg", "-nodefaults",
            "-no-user-config", "-pidfile", c("pid"), "-daemonize", "-D", c("qemu.log"),
            "-no-shutdown",
            "-device", "virtio-balloon-pci,id=balloon,bus=pci.0,addr=0x3",
            "-monitor", f"unix:{c('monitor')},server=on,wait=off",
            "-chardev", f"socket,id=serial0,path={c('serial')},server=on,wait=off,"
            f"logfile={c('console.log')},logappend=on",
            "-serial", "chardev:serial0", "-display", "none",
            "-kernel", str(self.guest.kernel), "-initrd", str(self.guest.initrd),
            "-append", f"{kargs} console=ttyS0,{self.serial_speed}",
            "-qmp", f"unix:{c('qmp')},server=on,wait=off",
            "-netdev", f"tap,id=nic0,fd={tap_fd}",
            "-device", f"virtio-net-pci,id=nic0,bus=pci.0,addr=0xc,netdev=nic0,mac={self.mac}",
        ]
        # fmt: on
        return argv + (["-incoming", incoming] if incoming else [])

    def start(self, node: vcl.VNode, iface_id: str | None, incoming: str | None = None) -> int:
        """Start QEMU on ``node`` once daemonized; its tap on ``br-int`` as kvm-ifup plugs it.

        The tap is opened on ``/dev/net/tun`` (it goes with QEMU), its TX
        checksum offload turned off and plugged into ``br-int`` (with
        ``iface_id`` or, for the naive destination, without) before QEMU
        starts with it as ``fd=``, in that order, as Corral's node does.
        """
        (self.dir / node.name).mkdir(parents=True, exist_ok=True)
        self.ctl(node, "pid").unlink(missing_ok=True)

        def launch() -> tuple[str, subprocess.CompletedProcess[bytes]]:  # in the node's netns
            with open_tap(vnet_hdr=True) as tap:
                ovs.plug_port(
                    self.db(node),
                    INT_BRIDGE,
                    tap.name,
                    iface_id=iface_id,
                    mac=self.mac,
                    vm=self.name,
                )
                res = subprocess.run(
                    self.argv(node, tap.fd, incoming),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    pass_fds=[tap.fd],
                    start_new_session=True,
                    check=False,
                )
                return tap.name, res

        tap, res = net.in_ns(node.ns, launch)
        self.taps[node.name] = tap
        pid = pid_in(self.ctl(node, "pid"))
        if pid is not None:
            self.pids[node.name] = pid
        if res.returncode != 0 or pid is None:
            raise BenchError(f"naive QEMU on {node.name} failed ({res.returncode}): {res.stderr!r}")
        return pid

    def bind(self, node: vcl.VNode) -> None:
        """``iface-id`` on ``node``'s Interface (one OVSDB transaction, as
        ``ovs-vsctl --no-wait set Interface``)."""
        ovs.plug_port(
            self.db(node),
            INT_BRIDGE,
            self.taps[node.name],
            iface_id=self.lsp,
            mac=self.mac,
            vm=self.name,
            prepare_tap=False,
            wait=False,
        )

    async def migrate(
        self, src: vcl.VNode, dst: vcl.VNode
    ) -> tuple[float, float, dict[str, float]]:
        """The naive move; returns (start, end, marks as wall times + QEMU's figures)."""
        marks: dict[str, float] = {}
        src_pid = self.pids[src.name]
        sq = QMPClient(f"naive-{src.name}")
        await sq.connect(str(self.ctl(src, "qmp")))
        uri = f"tcp:{dst.mgmt_ip}:{self.port}"
        try:
            start = time.time()
            await asyncio.to_thread(self.start, dst, None, uri)
            marks["target_qemu"] = time.time()
            caps = [{"capability": c, "state": True} for c in ("return-path", "events")]
            await sq.execute("migrate-set-capabilities", {"capabilities": caps})
            await sq.execute(
                "migrate-set-parameters",
                {"max-bandwidth": self.bandwidth_mib << 20, "downtime-limit": self.downtime_ms},
            )
            with sq.listener("MIGRATION") as events:
                await sq.execute("migrate", {"uri": uri})
                async for ev in events:
                    if ev["data"]["status"] in _FINAL:
                        break
            marks["completed"] = time.time()
            if ev["data"]["status"] != "completed":
                raise BenchError(f"naive migration {src.name} -> {dst.name}: {ev['data']}")
            # Now, and only now, the destination gets the port.
            await asyncio.gather(
                asyncio.to_thread(self.bind, dst),
                asyncio.to_thread(self.nb.finish_migration, self.lsp, dst.name),
            )
            marks["bound"] = time.time()
            info: dict[str, object] = {}
            for _ in range(50):  # right after "completed" the figures may still be 0
                got = await sq.execute("query-migrate")
                assert isinstance(got, dict)
                info = got
                if info.get("total-time"):
                    break
                await asyncio.sleep(0.01)
            with contextlib.suppress(Exception):
                await sq.execute("quit")
        finally:
            with contextlib.suppress(Exception):
                await sq.disconnect()
        while alive(src_pid):
            await asyncio.sleep(0.002)
        del self.pids[src.name]
        await asyncio.to_thread(
            ovs.unplug_port, self.db(src), self.taps.pop(src.name), only_if_iface_id=self.lsp
        )
        end = time.time()
        for key in ("total-time", "downtime"):
            value = info.get(key)
            if isinstance(value, int | float):
                marks[f"qemu_{key}"] = float(value)
        return start, end, marks

    def stop_all(self) -> None:
        """Kill our QEMUs by PID (checked against their argv: our directory)."""
        _kvmbench.kill_ours(self.pids, self.dir)
