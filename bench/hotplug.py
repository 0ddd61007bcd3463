"""Hotplug benchmark: a live NIC/disk change to the guest's report of it.

Builds a throw-away one-node virtual cluster as ``bench/boot.py`` does (the
same KVM set-up with the test guest under TCG, and the same instance: 128 MiB,
1 vCPU, one 16 MiB ``file`` disk, one bridged NIC on ``br0``), starts it, and
starts next to it, in the node's namespace, the raw-QEMU floor of
``bench/boot.py`` (same QEMU binary, guest, kernel command line and devices)
with a QMP socket. Both guests run for the whole benchmark. Each round does,
on both sides (the order of the two alternates between rounds), one after
the other, so that each round ends in the base state:

* ``nic_add``: ``gnt-instance modify --net add:mac=…,link=br0 <inst>``;
  floor: open a tap (:func:`corral.network.tap.open_tap`), make it a port of
  ``br0`` and up (one netlink request, pyroute2, in-process), ``getfd`` +
  ``netdev_add`` + ``device_add`` over QMP (``qemu.qmp``).
* ``nic_remove``: ``gnt-instance modify -f --net 1:remove <inst>``; floor:
  ``device_del``, wait for its ``DEVICE_DELETED``, ``netdev_del``.
* ``disk_add``: ``gnt-instance modify --disk add:size=8M <inst>``; floor:
  create the 8 MiB image, open it, ``add-fd`` + ``blockdev-add`` +
  ``device_add`` (virtio-blk with a 20-byte serial, as Corral's).
* ``disk_grow``: ``gnt-instance grow-disk <inst> 1 8M`` (the hot-added disk);
  floor: grow the image file, ``block_resize``.
* ``disk_remove``: ``gnt-instance modify -f --disk 1:remove <inst>``; floor:
  ``device_del``, wait for ``DEVICE_DELETED``, ``blockdev-del``,
  ``remove-fd``, delete the image.

Each figure is the time from starting the command (Corral: launching the
CLI in the master node's namespace as an admin would type it; floor: the
first step) until the operation is complete: the guest's first ``DEVICES``
line that shows the change (the console log is polled every 5 ms; the guest
itself looks every 20 ms) *and* the end of the command (Corral: the CLI
exited; floor: the last QMP reply). For a removal the guest stops listing
the device well before it lets go of it (``DEVICE_DELETED``, after which
the backend can be deleted): the operation is not done before that, on
either side. The guest's work is the same on both sides.

Where Corral's time goes: rows from the job's own timestamps (the master's
job store), the CLI's exit, and three separate measurements in the same run:
``gnt-instance modify --help`` (the CLI's interpreter and imports, no
master), and ``kvm-ifup``/``kvm-ifdown`` run on a spare tap in the node's
namespace with the environment noded gives them (bridged, ``br0``).

Target (issue "hotplug"): ratio ≤ 1.5 (median) for every operation.

Run as root: ``.venv/bin/python bench/hotplug.py [--runs N]`` (or ``make
bench``); about 1.5 min for 10 rounds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]
from qemu.qmp import EventListener, Message, QMPClient

import _kvmbench
from _util import Row, _num, print_table
from boot import (
    FLOOR_MAC,
    INSTANCE,
    KVM,
    MAC,
    POLL,
    BenchError,
    ConsoleTail,
    Floor,
    gnt,
    job_phases,
    setup_cluster,
    signals_as_exit,
    size,
    watch,
)
from corral import testguest
from corral import vcluster as vcl
from corral.errors import CorralError
from corral.network.tap import open_tap
from corral.testguest import DevicesLine
from corral.vcluster import net
from corral.vcluster.model import BIN

OPS = ("nic_add", "nic_remove", "disk_add", "disk_grow", "disk_remove")
HOT_MAC = "aa:00:00:b0:07:11"  # Corral's hot-added NIC
FLOOR_HOT_MAC = "aa:00:00:b0:07:12"  # the floor's
HOT_DISK_MIB = 8
GROW_MIB = 8
SECTOR = 512
NIC_ID = "nic-hot"  # the floor's device/netdev id
DISK_ID = "disk-hot"  # the floor's device/node id
FLOOR_HOT_SERIAL = "floor-hotdisk-000001"  # 20 bytes, as Corral's serials
OP_TIMEOUT = 60.0
TOOL_RUNS = 5  # runs of the CLI start-up and kvm-ifup/-down measurements


@dataclass
class Sample:
    """One operation on one side; seconds since its start (None: not seen)."""

    report: float
    done: float | None = None  # CLI exited / floor's last QMP reply
    job: dict[str, float] = field(default_factory=dict)  # job phases, same clock


@dataclass
class GuestState:
    """What a side's guest showed in the base state, and its hot devices."""

    console: Path
    hot_mac: str
    base_serials: frozenset[str]
    hot_serial: str | None = None


def changed(op: str, g: GuestState) -> Callable[[DevicesLine], bool]:
    """Does a report show ``op`` done?"""
    hot_sectors = (HOT_DISK_MIB + GROW_MIB) * (1 << 20) // SECTOR
    if op == "nic_add":
        return lambda d: g.hot_mac in d.macs
    if op == "nic_remove":
        return lambda d: g.hot_mac not in d.macs
    if op == "disk_add":
        return lambda d: bool(d.serials - g.base_serials)
    if op == "disk_grow":
        return lambda d: any(b.serial == g.hot_serial and b.sectors == hot_sectors for b in d.blk)
    if op == "disk_remove":
        return lambda d: g.hot_serial not in d.serials
    raise ValueError(op)


def learn(op: str, g: GuestState, line: DevicesLine) -> None:
    if op == "disk_add":
        (g.hot_serial,) = line.serials - g.base_serials


async def wait_report(
    tail: ConsoleTail,
    pred: Callable[[DevicesLine], bool],
    t0: float,
    stop: threading.Event,
    tick: Callable[[float], None] = lambda now: None,
) -> tuple[float, DevicesLine]:
    """Seconds from ``t0`` to the first new report that satisfies ``pred``."""
    while True:
        now = time.perf_counter()
        tick(now)
        for raw in tail.lines():
            line = testguest.parse_line(raw)
            if isinstance(line, DevicesLine) and pred(line):
                return now - t0, line
        if stop.is_set():
            raise BenchError("interrupted")
        if now - t0 > OP_TIMEOUT:
            text = tail.path.read_bytes()[-1500:] if tail.path.exists() else b""
            raise BenchError(
                f"no matching DEVICES line in {tail.path} within {OP_TIMEOUT} s: {text!r}"
            )
        await asyncio.sleep(POLL)


# --- Corral ------------------------------------------------------------------------


class _CliFailed(Exception):
    pass


def corral_argv(op: str) -> list[str]:
    inst = INSTANCE
    return {
        "nic_add": ["gnt-instance", "modify", "--net", f"add:mac={HOT_MAC},link=br0", inst],
        "nic_remove": ["gnt-instance", "modify", "-f", "--net", "1:remove", inst],
        "disk_add": ["gnt-instance", "modify", "--disk", f"add:size={HOT_DISK_MIB}M", inst],
        "disk_grow": ["gnt-instance", "grow-disk", inst, "1", f"{GROW_MIB}M"],
        "disk_remove": ["gnt-instance", "modify", "-f", "--disk", "1:remove", inst],
    }[op]


async def corral_op(node: vcl.VNode, op: str, g: GuestState, stop: threading.Event) -> Sample:
    argv = corral_argv(op)
    tail = ConsoleTail(g.console, size(g.console))
    wall0 = time.time()
    t0 = time.perf_counter()
    cli = net.popen_in(
        node.ns,
        [str(BIN / argv[0]), *argv[1:]],
        env=node.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    exit_at: list[float] = []

    def tick(now: float) -> None:
        if not exit_at and cli.poll() is not None:
            exit_at.append(now - t0)
            if cli.returncode != 0:
                raise _CliFailed

    out = ""
    try:
        try:
            report, line = await wait_report(tail, changed(op, g), t0, stop, tick)
            while not exit_at:  # the CLI outlived the report
                if time.perf_counter() - t0 > OP_TIMEOUT:
                    raise BenchError(f"{' '.join(argv)} still runs after {OP_TIMEOUT} s")
                tick(time.perf_counter())
                await asyncio.sleep(POLL)
        finally:
            if cli.poll() is None:
                cli.kill()  # our child, by PID
                cli.wait()
            if cli.stdout:
                out = cli.stdout.read().decode(errors="replace")
                cli.stdout.close()
    except _CliFailed:
        raise BenchError(f"{' '.join(argv)} failed ({cli.returncode}): {out}") from None
    learn(op, g, line)
    job = {k: v - wall0 for k, v in job_phases(node, wall0 - 1).items()}
    return Sample(report, exit_at[0], job)


# --- the floor: raw QEMU, driven over QMP --------------------------------------------


class HotFloor(Floor):
    """``boot.Floor`` with a QMP socket; it keeps running between operations."""

    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def hot_image(self) -> Path:
        return self.dir / "hot.raw"

    def argv(self) -> list[str]:
        return [*super().argv(), "-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]

    def start(self) -> subprocess.Popen[bytes]:
        for p in (self.pidfile, self.console, self.qmp_socket):
            p.unlink(missing_ok=True)
        proc: subprocess.Popen[bytes] = net.popen_in(
            self.node.ns,
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc


@dataclass
class FloorDriver:
    """The bench as its own management layer: the same steps, nothing else."""

    floor: HotFloor
    qmp: QMPClient
    ipr: AsyncIPRoute
    bridge: int  # ifindex of br0
    fdset: int | None = None

    async def unplug(self, dev_id: str) -> None:
        def accept(event: Message) -> bool:
            data = event.get("data")
            return isinstance(data, dict) and data.get("device") == dev_id

        gone = EventListener("DEVICE_DELETED", accept)
        with self.qmp.listen(gone):
            await self.qmp.execute("device_del", {"id": dev_id})
            await asyncio.wait_for(gone.get(), OP_TIMEOUT)

    async def nic_add(self) -> None:
        tap = open_tap(vnet_hdr=True)
        try:
            index = socket.if_nametoindex(tap.name)
            await self.ipr.link("set", index=index, master=self.bridge, state="up")
            self.qmp.send_fd_scm(tap.fd)
            await self.qmp.execute("getfd", {"fdname": NIC_ID})
            await self.qmp.execute("netdev_add", {"type": "tap", "id": NIC_ID, "fd": NIC_ID})
            await self.qmp.execute(
                "device_add",
                {
                    "driver": "virtio-net-pci",
                    "id": NIC_ID,
                    "bus": "pci.0",
                    "netdev": NIC_ID,
                    "mac": FLOOR_HOT_MAC,
                },
            )
        finally:
            tap.close()  # QEMU holds its own descriptor now

    async def nic_remove(self) -> None:
        await self.unplug(NIC_ID)
        await self.qmp.execute("netdev_del", {"id": NIC_ID})

    async def disk_add(self) -> None:
        path = self.floor.hot_image
        with open(path, "wb") as f:
            f.truncate(HOT_DISK_MIB << 20)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.qmp.send_fd_scm(fd)
            res = await self.qmp.execute("add-fd", {"opaque": DISK_ID})
            assert isinstance(res, dict)
            self.fdset = int(res["fdset-id"])
            await self.qmp.execute(
                "blockdev-add",
                {
                    "driver": "raw",
                    "node-name": DISK_ID,
                    "read-only": False,
                    "discard": "ignore",
                    "cache": {"direct": False, "no-flush": False},
                    "file": {
                        "driver": "file",
                        "filename": f"/dev/fdset/{self.fdset}",
                        "aio": "threads",
                    },
                },
            )
            await self.qmp.execute(
                "device_add",
                {
                    "driver": "virtio-blk-pci",
                    "id": DISK_ID,
                    "bus": "pci.0",
                    "drive": DISK_ID,
                    "serial": FLOOR_HOT_SERIAL,
                },
            )
        finally:
            os.close(fd)  # QEMU keeps its copy in the fd set

    async def disk_grow(self) -> None:
        new_size = (HOT_DISK_MIB + GROW_MIB) << 20
        os.truncate(self.floor.hot_image, new_size)
        await self.qmp.execute("block_resize", {"node-name": DISK_ID, "size": new_size})

    async def disk_remove(self) -> None:
        await self.unplug(DISK_ID)
        await self.qmp.execute("blockdev-del", {"node-name": DISK_ID})
        if self.fdset is not None:
            await self.qmp.execute("remove-fd", {"fdset-id": self.fdset})
            self.fdset = None
        self.floor.hot_image.unlink()

    async def run(self, op: str, g: GuestState, stop: threading.Event) -> Sample:
        tail = ConsoleTail(g.console, size(g.console))
        t0 = time.perf_counter()
        steps = asyncio.create_task(getattr(self, op)())
        done_at: list[float] = []

        def tick(now: float) -> None:
            if not done_at and steps.done():
                done_at.append(now - t0)

        try:
            report, line = await wait_report(tail, changed(op, g), t0, stop, tick)
            await asyncio.wait_for(asyncio.shield(steps), OP_TIMEOUT)
            tick(time.perf_counter())
        except BaseException:
            if steps.done() and not steps.cancelled() and steps.exception() is not None:
                raise BenchError(f"floor {op} failed: {steps.exception()}") from None
            steps.cancel()
            raise
        learn(op, g, line)
        return Sample(report, done_at[0])


async def connect_qmp(path: Path, proc: subprocess.Popen[bytes]) -> QMPClient:
    qmp = QMPClient("floor")
    deadline = time.monotonic() + 30
    while True:
        try:
            await qmp.connect(str(path))
            return qmp
        except Exception as err:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"cannot reach the floor's QMP socket {path}: {err}") from None
            await asyncio.sleep(0.05)


# --- the measurement loop (inside the node's namespace) ------------------------------

Samples = dict[str, dict[str, list[Sample]]]  # op -> side -> samples


async def measure(
    node: vcl.VNode,
    floor: HotFloor,
    floor_proc: subprocess.Popen[bytes],
    corral_g: GuestState,
    floor_g: GuestState,
    runs: int,
    stop: threading.Event,
) -> Samples:
    qmp = await connect_qmp(floor.qmp_socket, floor_proc)
    ipr = AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        drv = FloorDriver(floor, qmp, ipr, socket.if_nametoindex("br0"))
        out: Samples = {op: {"corral": [], "floor": []} for op in OPS}
        for i in range(runs + 1):  # the first round is the warm-up
            got: dict[str, dict[str, Sample]] = {}
            for op in OPS:
                got[op] = {}
                for who in ("corral", "floor") if i % 2 == 0 else ("floor", "corral"):
                    if who == "corral":
                        got[op][who] = await corral_op(node, op, corral_g, stop)
                    else:
                        got[op][who] = await drv.run(op, floor_g, stop)
                    if i > 0:
                        out[op][who].append(got[op][who])
            print(
                f"round {i}{' (warm-up)' if i == 0 else ''}: "
                + " ".join(
                    f"{op}={got[op]['corral'].report:.3f}/{got[op]['floor'].report:.3f}s"
                    for op in OPS
                )
                + f" load={os.getloadavg()[0]:.2f}",
                file=sys.stderr,
            )
        return out
    finally:
        ipr.close()
        await qmp.disconnect()


def run_in_thread(ns: str, fn: Callable[[], Samples], stop: threading.Event) -> Samples:
    """``fn()`` on a thread inside ``ns``; Ctrl-C/SIGTERM in the main thread stops it."""
    box: dict[str, object] = {}

    def _run() -> None:
        try:
            net.enter_ns(ns)  # this thread only: open_tap and netlink act in the node
            box["result"] = fn()
        except BaseException as err:
            box["error"] = err

    t = threading.Thread(target=_run, name=f"bench-{ns}", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.2)
    except BaseException:
        stop.set()
        t.join(OP_TIMEOUT)
        raise
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


# --- where the time goes: the CLI's start-up, kvm-ifup ---------------------------------


def time_run(ns: str, argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = net.run_in_ns(ns, argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        out = (res.stdout + res.stderr).decode(errors="replace")
        raise BenchError(f"{' '.join(argv)} failed ({res.returncode}): {out}")
    return took


def tool_timings(node: vcl.VNode, tap: str) -> dict[str, list[float]]:
    """``gnt-instance modify --help``; ``kvm-ifup``/``kvm-ifdown`` on a spare tap."""
    net.run_in_ns(
        node.ns,
        ["ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"],
        check=True,
        capture_output=True,
    )
    scripts = Path(sys.executable).parent  # where noded finds them
    env = {
        **node.env,
        "INSTANCE": INSTANCE,
        "MAC": HOT_MAC,
        "MODE": "bridged",
        "LINK": "br0",
        "INTERFACE": tap,
        "INTERFACE_INDEX": "1",
        "INTERFACE_UUID": "00000000-0000-4000-8000-000000000001",
        "TAGS": "",
    }
    out: dict[str, list[float]] = {"help": [], "ifup": [], "ifdown": []}
    try:
        for _ in range(TOOL_RUNS):
            out["help"].append(
                time_run(node.ns, [str(BIN / "gnt-instance"), "modify", "--help"], node.env)
            )
            out["ifup"].append(time_run(node.ns, [str(scripts / "kvm-ifup"), tap], env))
            out["ifdown"].append(
                time_run(node.ns, [str(scripts / "kvm-ifdown"), tap, "hot-remove"], env)
            )
    finally:
        net.run_in_ns(node.ns, ["ip", "link", "del", tap], capture_output=True)
    return out


# --- report ---------------------------------------------------------------------------


def complete(s: Sample) -> float | None:
    """Guest report seen and command finished (see the module docstring)."""
    if s.report is None or s.done is None:
        return None
    return max(s.report, s.done)


def med(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def report(samples: Samples, tools: dict[str, list[float]], note: str) -> None:
    def row(name: str, vals: list[float | None], txt: str = "") -> Row:
        got = [v for v in vals if v is not None]
        return Row(name, got or [float("nan")], "s", txt)

    rows: list[Row] = []
    for op in OPS:
        c, f = samples[op]["corral"], samples[op]["floor"]
        rows += [
            row(f"{op}: Corral, CLI -> complete", [complete(s) for s in c], "target: ratio <= 1.5"),
            row("  guest report", [s.report for s in c]),
            row("  job received (CLI start-up, submit)", [s.job.get("received") for s in c]),
            row("  opcode executing (locks held)", [s.job.get("op_exec") for s in c]),
            row("  job finished", [s.job.get("job_end") for s in c]),
            row("  CLI exited", [s.done for s in c]),
            row(f"{op}: floor, first step -> complete", [complete(s) for s in f]),
            row("  guest report", [s.report for s in f]),
            row("  last QMP reply", [s.done for s in f]),
        ]
    rows += [
        row("gnt-instance modify --help (CLI start-up)", list(tools["help"])),
        row("kvm-ifup (bridged, br0)", list(tools["ifup"])),
        row("kvm-ifdown (hot-remove)", list(tools["ifdown"])),
    ]
    print_table(f"Hotplug benchmark ({note})", rows)

    headers = ["operation", "corral median", "floor median", "ratio", "n"]
    cells = []
    figures = []
    for op in OPS:
        cm = med([complete(s) for s in samples[op]["corral"]])
        fm = med([complete(s) for s in samples[op]["floor"]])
        n = min(len(samples[op]["corral"]), len(samples[op]["floor"]))
        cells.append([op, f"{_num(cm)} s", f"{_num(fm)} s", f"{cm / fm:.2f}", str(n)])
        figures.append(f"{op}: corral={_num(cm)}s floor={_num(fm)}s ratio={cm / fm:.2f}")
    widths = [max(len(h), *(len(x[i]) for x in cells)) for i, h in enumerate(headers)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for x in cells:
        print("  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)).rstrip())
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print()
    for line in figures:
        print(line)


# --- main ---------------------------------------------------------------------------


def first_report(console: Path, offset: int, pidfile: Path, mac: str, hot_mac: str) -> GuestState:
    """The base state, from the guest's first report after its start."""
    marks = watch(console, offset, pidfile, time.perf_counter())
    line = marks.report_line
    if line is None or mac not in line.macs or len(line.blk) != 1:
        raise BenchError(f"the first report of {console} is not one NIC and one disk: {line}")
    return GuestState(console, hot_mac, line.serials)


def main() -> int:
    kb = _kvmbench.start("hotplug", KVM, __doc__, 10, "measured rounds (default 10)")
    note, guest, machine, work = kb.note, kb.guest, kb.machine, kb.work
    stop = threading.Event()
    try:
        with signals_as_exit(), vcl.virtual_cluster(1, base=work / "vc") as vc:
            node = vc.master
            setup_cluster(vc, guest)
            fl = HotFloor(node, guest, machine, work / "floor", tap=f"{vc.prefix}ft")
            try:
                fl.prepare()
                console = node.paths.log_dir / "kvm" / f"{INSTANCE}.console.log"
                offset = size(console)
                gnt(vc, "gnt-instance", "startup", INSTANCE)
                floor_proc = fl.start()
                pidfile = node.paths.hv_run_dir("kvm") / "pid" / INSTANCE
                corral_g = first_report(console, offset, pidfile, MAC, HOT_MAC)
                floor_g = first_report(fl.console, 0, fl.pidfile, FLOOR_MAC, FLOOR_HOT_MAC)
                tools = tool_timings(node, f"{vc.prefix}kt")
                samples = run_in_thread(
                    node.ns,
                    lambda: asyncio.run(
                        measure(node, fl, floor_proc, corral_g, floor_g, kb.runs, stop)
                    ),
                    stop,
                )
            finally:
                stop.set()
                fl.stop_all()
    except (BenchError, CorralError) as err:
        raise SystemExit(f"hotplug benchmark failed: {err}") from None
    except KeyboardInterrupt:
        print("\nhotplug benchmark interrupted; cluster and QEMUs removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(samples, tools, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
