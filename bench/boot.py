"""Instance start benchmark: ``gnt-instance startup`` to the guest's first report.

Builds a throw-away one-node virtual cluster (:mod:`corral.vcluster`, its
own namespaces under a fresh directory in ``/var/tmp``), enables the KVM
hypervisor with the test guest (:func:`corral.testguest.build`: a PVH
``vmlinux`` + initramfs that prints ``DEVICES net=… blk=… up=…`` on its
serial console) under TCG, and adds one instance with ``--no-start``:
128 MiB, 1 vCPU, one 16 MiB ``file`` disk, one bridged NIC on ``br0``.

* ``instance_start``: ``gnt-instance startup <inst>``, run in the master
  node's namespace as an admin would type it, until the first new
  ``DEVICES`` line appears in the instance's console log
  (``<root>/var/log/corral/kvm/<inst>.console.log``); seconds. The
  instance is then shut down (``gnt-instance shutdown``, not timed).
  Floor, in the same run and interleaved (the order alternates): the same
  QEMU binary started directly in the same namespace with the same guest,
  kernel command line and devices (``-nodefaults``, the same machine type,
  TCG, 128 MiB, 1 vCPU, virtio-blk on a raw 16 MiB file with a serial,
  virtio-net on a tap that is already a port of ``br0``, virtio-balloon as
  Corral adds it, serial console to a file), until its first ``DEVICES``
  line; then it is killed.

Corral's breakdown rows come from the job's own timestamps (the master's
job store), QEMU's pid file appearing, and the CLI exiting; the guest's
``up=`` is its own uptime at the report (kernel + init; the same guest
work on both sides). The CPU rows (``/proc/<pid>/stat``, rusage) show who
worked until the report: QEMU, the CLI, masterd, noded with its
``kvm-ifup`` child.

Target (issue "KVM"): ratio ≤ 1.3 (median). Context: Ganeti 3.0 measured
1.5 s for ``gnt-instance start`` of a guest-less instance.

Run as root: ``.venv/bin/python bench/boot.py [--runs N]`` (or
``make bench``); about 1 min for 5 runs (TCG boots take ~3 s each).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _kvmbench
from _util import Row, figure, print_table
from corral import testguest
from corral import vcluster as vcl
from corral.errors import CorralError
from corral.testguest import BootLine, DevicesLine
from corral.vcluster import net
from corral.vcluster.model import BIN

KVM = "/usr/bin/kvm"
INSTANCE = "boot1"
MAC = "aa:00:00:b0:07:01"  # Corral's instance
FLOOR_MAC = "aa:00:00:b0:07:02"  # the raw QEMU (never up at the same time)
MEMORY_MIB = 128
DISK_MIB = 16
KERNEL_ARGS = "quiet"
SERIAL_SPEED = 38400  # Corral's default serial_speed: the same console= on both sides
POLL = 0.005  # seconds between looks at the console log / pid file
REPORT_TIMEOUT = 120.0


class BenchError(Exception):
    pass


@dataclass
class Marks:
    """Seconds since the run started (None: not seen)."""

    pidfile: float | None = None  # QEMU wrote its pid file
    boot: float | None = None  # the guest's init printed GUEST BOOT
    report: float | None = None  # first DEVICES line
    cli_exit: float | None = None  # gnt-instance startup returned (Corral only)
    guest_uptime: float | None = None  # the guest's own up= at the report
    report_line: DevicesLine | None = None
    job: dict[str, float] = field(default_factory=dict)  # job phases, same clock
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds until the report


class ConsoleTail:
    """New complete lines of a growing file, from a byte offset."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""

    def lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *done, self.partial = (self.partial + data).split(b"\n")
        return done


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """User + system CPU time of ``pid`` (plus its reaped children's)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): utime/stime are 14/15, cutime/cstime 16/17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def watch(
    console: Path,
    offset: int,
    pidfile: Path,
    t0: float,
    tick: Callable[[float], None] = lambda now: None,
) -> Marks:
    """Poll until the first DEVICES line; times relative to ``t0``.

    ``tick(now)`` runs on every poll (the caller notes its own events).
    """
    marks = Marks()
    tail = ConsoleTail(console, offset)
    deadline = t0 + REPORT_TIMEOUT
    while True:
        now = time.perf_counter()
        tick(now)
        if marks.pidfile is None and pidfile.exists():
            marks.pidfile = now - t0
        for raw in tail.lines():
            line = testguest.parse_line(raw)
            if isinstance(line, BootLine) and marks.boot is None:
                marks.boot = now - t0
            elif isinstance(line, DevicesLine) and marks.report is None:
                marks.report = now - t0
                marks.report_line = line
                marks.guest_uptime = line.uptime
                pid = pid_in(pidfile)
                qemu_cpu = cpu_seconds(pid) if pid is not None else None
                if qemu_cpu is not None:
                    marks.cpu["qemu"] = qemu_cpu
                return marks
        if now > deadline:
            text = console.read_bytes()[-1500:] if console.exists() else b""
            raise BenchError(f"no DEVICES line in {console} within {REPORT_TIMEOUT} s: {text!r}")
        time.sleep(POLL)


# --- Corral ------------------------------------------------------------------------


def gnt(vc: vcl.VCluster, *argv: str) -> str:
    return str(vcl.run_in(vc.master, list(argv), check=True, timeout=300).stdout)


def setup_cluster(vc: vcl.VCluster, guest: testguest.GuestImage) -> None:
    gnt(
        vc,
        *guest.enable_kvm_argv(KERNEL_ARGS, kvm_path=KVM),
    )
    gnt(
        vc,
        "gnt-instance",
        "add",
        "-t",
        "file",
        "--disk",
        f"0:size={DISK_MIB}M",
        "-B",
        f"memory={MEMORY_MIB}M,vcpus=1",
        "--net",
        f"0:mac={MAC},link=br0",
        "-n",
        vc.master.name,
        "--no-name-check",
        "--no-ip-check",
        "--no-start",
        "-o",
        "noop",
        INSTANCE,
    )


def job_phases(node: vcl.VNode, since: float) -> dict[str, float]:
    """Timestamps (wall clock) of the newest job received after ``since``."""
    db = node.paths.data_dir / "queue" / "jobs.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        row = c.execute(
            "SELECT j.received_ts, o.start_ts, o.exec_ts, o.end_ts, j.end_ts "
            "FROM jobs j JOIN ops o ON o.job_id = j.id "
            "WHERE j.received_ts >= ? ORDER BY j.id DESC LIMIT 1",
            (since,),
        ).fetchone()
    if row is None:
        return {}
    keys = ("received", "op_start", "op_exec", "op_end", "job_end")
    return {k: v for k, v in zip(keys, row, strict=True) if v is not None}


def daemon_pids(vc: vcl.VCluster) -> dict[str, int]:
    return {r.role: r.pid for r in vc.processes if r.role in ("masterd", "noded")}


def corral_run(vc: vcl.VCluster) -> Marks:
    node = vc.master
    console = node.paths.log_dir / "kvm" / f"{INSTANCE}.console.log"
    pidfile = node.paths.hv_run_dir("kvm") / "pid" / INSTANCE
    if pidfile.exists():
        raise BenchError(f"{INSTANCE} is still running before the run ({pidfile})")
    offset = size(console)
    daemons = daemon_pids(vc)
    cpu0 = {role: cpu_seconds(pid, children=True) for role, pid in daemons.items()}
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [str(BIN / "gnt-instance"), "startup", INSTANCE]
    wall0 = time.time()
    t0 = time.perf_counter()
    cli = net.popen_in(
        node.ns,
        argv,
        env=node.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    exit_at: list[float] = []
    cli_cpu: list[float] = []

    def tick(now: float) -> None:
        if not exit_at and cli.poll() is not None:  # poll() reaps it: rusage counts it
            exit_at.append(now - t0)
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli_cpu.append(ru.ru_utime + ru.ru_stime - children0.ru_utime - children0.ru_stime)

    try:
        marks = watch(console, offset, pidfile, t0, tick)
        for role, pid in daemons.items():
            before, after = cpu0[role], cpu_seconds(pid, children=True)
            if before is not None and after is not None:
                marks.cpu[role] = after - before  # noded's includes kvm-ifup (its child)
    finally:
        if cli.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                cli.wait(REPORT_TIMEOUT)
    if not exit_at:
        tick(time.perf_counter())  # the CLI outlived the report
    out = cli.stdout.read().decode(errors="replace") if cli.stdout else ""
    if cli.stdout:
        cli.stdout.close()
    if cli.returncode != 0:
        raise BenchError(f"gnt-instance startup failed ({cli.returncode}): {out}")
    marks.cli_exit = exit_at[0]
    if cli_cpu:
        marks.cpu["cli"] = cli_cpu[0]
    # The job's timestamps are wall clock: make them relative to the CLI launch.
    marks.job = {k: v - wall0 for k, v in job_phases(node, wall0 - 1).items()}
    gnt(vc, "gnt-instance", "shutdown", "--timeout=30", INSTANCE)
    return marks


# --- the floor: raw QEMU -----------------------------------------------------------


@dataclass
class Floor:
    node: vcl.VNode
    guest: testguest.GuestImage
    machine: str
    dir: Path
    tap: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def disk(self) -> Path:
        return self.dir / "disk0.raw"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.disk, "wb") as f:
            f.truncate(DISK_MIB << 20)
        # A tap that is a port of br0 before QEMU attaches, as the admin's
        # ifup script would leave it; it lives (and dies) with the node namespace.
        for cmd in (
            ["ip", "tuntap", "add", "dev", self.tap, "mode", "tap", "vnet_hdr"],
            ["ip", "link", "set", self.tap, "master", "br0", "up"],
        ):
            net.run_in_ns(self.node.ns, cmd, check=True, capture_output=True)

    def argv(self) -> list[str]:
        return [
            KVM,
            "-machine",
            f"{self.machine},accel=tcg",
            "-nodefaults",
            "-no-user-config",
            "-m",
            str(MEMORY_MIB),
            "-smp",
            "1",
            "-display",
            "none",
            "-pidfile",
            str(self.pidfile),
            "-kernel",
            str(self.guest.kernel),
            "-initrd",
            str(self.guest.initrd),
            "-append",
            f"{KERNEL_ARGS} console=ttyS0,{SERIAL_SPEED}",
            "-serial",
            f"file:{self.console}",
            "-device",
            "virtio-balloon-pci,id=balloon",
            "-drive",
            f"file={self.disk},format=raw,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0,serial=floor-disk-000000000",  # 20 bytes, as Corral's
            "-netdev",
            f"tap,id=nic0,ifname={self.tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=nic0,mac={FLOOR_MAC}",
        ]

    def run(self) -> Marks:
        self.pidfile.unlink(missing_ok=True)
        self.console.unlink(missing_ok=True)  # QEMU's file: chardev truncates anyway
        argv = self.argv()
        t0 = time.perf_counter()
        proc = net.popen_in(
            self.node.ns,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        try:
            marks = watch(self.console, 0, self.pidfile, t0)
        except BenchError:
            if proc.poll() is not None and proc.stderr:
                raise BenchError(
                    f"QEMU exited ({proc.returncode}): {proc.stderr.read().decode()[-1500:]}"
                ) from None
            raise
        finally:
            self.stop(proc)
        return marks

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill our QEMU by PID (it is our child: no reuse possible before we reap it)."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)


# --- main ---------------------------------------------------------------------------


@contextlib.contextmanager
def signals_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every ``finally`` cleans up."""

    me = os.getpid()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != me:
            # A forked helper (pyroute2 forks to enter namespaces) must just die,
            # never run our clean-up a second time.
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def check_report(who: str, m: Marks, mac: str) -> None:
    line = m.report_line
    if line is None or mac not in line.macs or not line.blk:
        print(f"warning: {who}'s first report lacks its NIC or disk: {line}", file=sys.stderr)


Pick = Callable[[Marks], float | None]


def values(marks: list[Marks], pick: Pick) -> list[float]:
    vals = [pick(m) for m in marks]
    return [v for v in vals if v is not None]


def report(corral: list[Marks], floor: list[Marks], note: str) -> None:
    def row(name: str, ms: list[Marks], pick: Pick, txt: str = "") -> Row:
        vals = values(ms, pick)
        return Row(name, vals or [float("nan")], "s", txt)

    rows = [
        row("raw QEMU exec -> first report (floor)", floor, lambda m: m.report),
        row("  QEMU pid file written", floor, lambda m: m.pidfile),
        row("  guest init started (GUEST BOOT)", floor, lambda m: m.boot),
        row("  guest's own uptime at report", floor, lambda m: m.guest_uptime),
        row(
            "gnt-instance startup -> first report",
            corral,
            lambda m: m.report,
            "target: ratio <= 1.3; Ganeti 3.0: 1.5 s (no guest)",
        ),
        row("  job received (CLI start-up, submit)", corral, lambda m: m.job.get("received")),
        row("  opcode executing (locks held)", corral, lambda m: m.job.get("op_exec")),
        row("  QEMU pid file written", corral, lambda m: m.pidfile),
        row("  job finished", corral, lambda m: m.job.get("job_end")),
        row("  CLI exited", corral, lambda m: m.cli_exit),
        row("  guest init started (GUEST BOOT)", corral, lambda m: m.boot),
        row("  guest's own uptime at report", corral, lambda m: m.guest_uptime),
        row(
            "  report - pid file (QEMU's share)",
            corral,
            lambda m: None if m.report is None or m.pidfile is None else m.report - m.pidfile,
        ),
        row(
            "  report - pid file, floor",
            floor,
            lambda m: None if m.report is None or m.pidfile is None else m.report - m.pidfile,
        ),
        row("CPU until the report: raw QEMU", floor, lambda m: m.cpu.get("qemu")),
        row("  Corral's QEMU", corral, lambda m: m.cpu.get("qemu")),
        row("  gnt-instance startup (CLI)", corral, lambda m: m.cpu.get("cli")),
        row("  corral-masterd", corral, lambda m: m.cpu.get("masterd")),
        row("  corral-noded (+ kvm-ifup)", corral, lambda m: m.cpu.get("noded")),
    ]
    print_table(f"Instance start benchmark ({note})", rows)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print()
    print(figure("instance_start", rows[4].median, rows[0].median))


def main() -> int:
    kb = _kvmbench.start("boot", KVM, __doc__, 5, "measured runs of each (default 5)")
    note, guest, machine, work = kb.note, kb.guest, kb.machine, kb.work
    corral: list[Marks] = []
    floor: list[Marks] = []
    try:
        with signals_as_exit(), vcl.virtual_cluster(1, base=work / "vc") as vc:
            setup_cluster(vc, guest)
            fl = Floor(vc.master, guest, machine, work / "floor", tap=f"{vc.prefix}ft")
            try:
                fl.prepare()
                for i in range(kb.runs + 1):  # the first round is the warm-up
                    got: dict[str, Marks] = {}
                    for who in ("corral", "floor") if i % 2 == 0 else ("floor", "corral"):
                        got[who] = corral_run(vc) if who == "corral" else fl.run()
                        check_report(who, got[who], MAC if who == "corral" else FLOOR_MAC)
                    if i > 0:
                        corral.append(got["corral"])
                        floor.append(got["floor"])
                    print(
                        f"round {i}{' (warm-up)' if i == 0 else ''}: "
                        f"corral={got['corral'].report:.2f}s floor={got['floor'].report:.2f}s "
                        f"load={os.getloadavg()[0]:.2f}",
                        file=sys.stderr,
                    )
            finally:
                fl.stop_all()
    except (BenchError, CorralError) as err:
        raise SystemExit(f"boot benchmark failed: {err}") from None
    except KeyboardInterrupt:
        print("\nboot benchmark interrupted; cluster and QEMUs removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(corral, floor, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
