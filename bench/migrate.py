"""Live migration benchmark: ``gnt-instance migrate -f`` against a raw QMP migration.

Builds a throw-away two-node virtual cluster (:mod:`corral.vcluster`, under
a fresh directory in ``/var/tmp``), enables KVM with the test guest under
TCG and adds a diskless 256 MiB instance with one bridged NIC on ``br0``
(the VM network spanning both nodes), with the migration parameters
printed with the results (``migration_bandwidth``, ``migration_downtime``). A
client namespace on node1's ``br0`` pings the guest every 10 ms.

* ``migrate_total``: ``gnt-instance migrate -f <inst>`` run in the master's
  namespace as an admin types it, from launching the CLI to its exit (the
  old QEMU is gone by then); seconds. The instance goes back and forth.
  Floor, in the same run, interleaved (the order alternates), between the
  same two node namespaces: a second guest (same image, memory, machine
  type and device layout as Corral's QEMU; its own MAC/IP) migrated by hand:
  open a tap and make it a port of ``br0`` as Corral's node daemon does
  (not persistent: it goes when the source QEMU exits, as Corral's does),
  start the destination QEMU with it as ``fd=`` and ``-incoming
  tcp:<node IP>:<port>`` (``-daemonize``, as Corral does), on the source QMP
  ``migrate-set-capabilities`` (return-path, as Corral),
  ``migrate-set-parameters`` with the same max-bandwidth and
  downtime-limit, ``migrate``, ``query-migrate`` every 10 ms until
  ``completed``, ``quit``, until the source process is gone (its pidfd
  readable: memory freed and tap closed, what Corral waits for too).
* ``migrate_pings_lost``: ICMP echo requests (``ping -i 0.01 -D``) without
  a reply, counted by sequence gaps between the last reply before the
  migration started and the first reply after it ended.
* QEMU's own ``downtime`` (Corral: the job log's "Migration completed in
  … (QEMU: total … ms, downtime … ms)"; floor: ``query-migrate``).

Where Corral's time goes: rows from the job's timestamps (the master's job
store: received, opcode executing, log messages; "Migration completed in
X s" dates the ``instance_migrate`` RPC), the target QEMU's pid file
appearing, the source QEMU's exit. Both guests run during the whole
benchmark (each idles while the other moves). Each migration starts after
``SETTLE`` seconds of clean pings, so both sides find the destination's
memory in the same state (see ``SETTLE``: on this VM, memory freed more than
~2 s earlier is slow to touch again).

Targets (issue "live migration"): total ratio <= 1.5; pings lost <= floor + 1.

Run as root: ``.venv/bin/python bench/migrate.py [--runs N]`` (or ``make
bench``); about 100 s for 10 runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qemu.qmp import QMPClient

import _kvmbench
from _util import Row, _num, print_table
from boot import KVM, BenchError, gnt, job_phases, pid_in, signals_as_exit
from corral import testguest
from corral import vcluster as vcl
from corral.demotools import Pinger, wait_report
from corral.errors import CorralError
from corral.network import brioctl
from corral.network.tap import open_tap
from corral.testguest import DevicesLine
from corral.vcluster import net
from corral.vcluster.model import BIN

INSTANCE = "mig1"
MAC = "aa:00:00:3a:00:01"
IP = "203.0.113.71"
FLOOR_MAC = "aa:00:00:3a:00:02"
FLOOR_IP = "203.0.113.72"
CLIENT_IP = "203.0.113.200"
MEMORY_MIB = 256
BANDWIDTH_MIB = 1000  # migration_bandwidth (MiB/s) on both sides
DOWNTIME_MS = 50  # migration_downtime (ms) on both sides
CORRAL_PORT = 8102  # Corral's default migration_port
FLOOR_PORT = 8112
SERIAL_SPEED = 38400  # Corral's default: the same console= on both sides
PING_INTERVAL = 0.01
# Seconds of clean pings before each migration. Long enough that every
# migration finds the destination's memory in the same state: this VM's
# balloon reports free pages to its host ~2 s after they are freed, and a
# destination QEMU that receives into reported pages zeroes them the slow
# way (perf: clear_page_erms under do_huge_pmd_anonymous_page, 300+ ms of
# kernel time instead of ~50). With 0.3 s the back-to-back rounds got fast
# or slow memory by chance, more often slow for whichever side allocated
# later (Corral: after its CLI and checks), so the figure measured the
# host's page reporting as much as Corral.
SETTLE = 3.0
FLOOR_POLL = 0.01  # the floor's query-migrate interval
TIMEOUT = 120.0
PARAMS = (
    f"max-bandwidth {BANDWIDTH_MIB} MiB/s (migration_bandwidth), downtime-limit {DOWNTIME_MS} "
    f"ms (migration_downtime), capabilities return-path; guest {MEMORY_MIB} MiB, 1 vCPU, TCG"
)

_COMPLETED = re.compile(
    r"Migration completed in ([\d.]+) s \(QEMU: total (\d+) ms, downtime (\d+) ms\)"
)


# --- pings -----------------------------------------------------------------------------


@dataclass
class Sample:
    """One migration; times in seconds from its start."""

    total: float
    lost: int | None = None
    qemu_total_ms: float | None = None
    downtime_ms: float | None = None
    marks: dict[str, float] = field(default_factory=dict)


Run = Callable[[], tuple[float, float, Sample]]


class GuestStalled(BenchError):
    """The guest answered again only after a long pause, after a migration that went through.

    Seen now and then under TCG with both Corral and the raw floor: QEMU
    runs, the bridges point at the right tap, the echo requests reach it,
    and the guest sits in its idle loop for 10-40 s before it answers again.
    Not Corral's doing (the floor's raw QEMU does it too), and no figure for
    either: the round is run again."""


STALL_WAIT = 60.0  # how long a silent guest gets before the benchmark gives up
MAX_STALLS = 3


def with_pings(client: str, address: str, run: Run) -> Sample:
    """Run ``run() -> (start, end, Sample)`` with pings around it; fills ``lost``."""
    pinger = Pinger(client, address, PING_INTERVAL)
    try:
        if not pinger.wait_reply(0.0, 15.0):
            raise BenchError(f"{address} does not answer ping before the migration")
        time.sleep(SETTLE)
        start, end, sample = run()
        if not pinger.wait_reply(end + 0.02, 10.0):
            if not pinger.wait_reply(end + 0.02, STALL_WAIT):
                raise BenchError(f"{address} does not answer ping after the migration")
            raise GuestStalled(
                f"{address} answered again only {time.time() - end:.0f} s after its migration"
            )
    finally:
        pinger.stop()
    sample.lost = pinger.lost(start, end)
    return sample


# --- Corral -----------------------------------------------------------------------------


def pidfile(node: vcl.VNode) -> Path:
    return node.paths.hv_run_dir("kvm") / "pid" / INSTANCE


def alive(pid: int) -> bool:
    """Running (a daemonized QEMU's zombie waits for init to reap it: not alive)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def job_log(node: vcl.VNode, since: float) -> list[tuple[float, str]]:
    """(wall time, message) of the newest job received after ``since``."""
    db = node.paths.data_dir / "queue" / "jobs.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        rows = c.execute(
            "SELECT ts_sec + ts_usec / 1e6, message FROM log WHERE job_id = "
            "(SELECT MAX(id) FROM jobs WHERE received_ts >= ?) ORDER BY serial",
            (since,),
        ).fetchall()
    return [(float(ts), str(msg)) for ts, msg in rows]


def corral_migrate(vc: vcl.VCluster, src: vcl.VNode, dst: vcl.VNode) -> tuple[float, float, Sample]:
    src_pid = pid_in(pidfile(src))
    if src_pid is None or not alive(src_pid) or pidfile(dst).exists():
        raise BenchError(f"{INSTANCE} is not running on {src.name} only before the migration")
    argv = [str(BIN / "gnt-instance"), "migrate", "-f", INSTANCE]
    marks: dict[str, float] = {}
    src_fd = os.pidfd_open(src_pid)
    start = time.time()
    cli = net.popen_in(
        vc.master.ns,
        argv,
        env=vc.master.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = b""
    # Sleeping on pidfds, not polling: nothing of the benchmark's runs while
    # Corral and the QEMUs work. A pidfd turns readable once the process is
    # gone (memory freed, files closed).
    cli_fd = os.pidfd_open(cli.pid)
    waiting = {src_fd: "source_gone", cli_fd: "cli_exit"}
    try:
        deadline = time.monotonic() + TIMEOUT
        while cli_fd in waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], deadline - time.monotonic())
            now = time.time()
            for fd in ready:
                marks[waiting.pop(fd)] = now - start
        end = time.time()
        with contextlib.suppress(OSError):  # QEMU writes its pid file as it starts
            marks["target_qemu"] = pidfile(dst).stat().st_mtime - start
    finally:
        os.close(src_fd)
        os.close(cli_fd)
        if cli.poll() is None:
            cli.kill()
        cli.wait()
        if cli.stdout:
            out = cli.stdout.read()
            cli.stdout.close()
    if cli.returncode != 0:
        raise BenchError(f"gnt-instance migrate failed ({cli.returncode}): {out.decode()}")
    sample = Sample(total=end - start, marks=marks)
    sample.marks.update({k: v - start for k, v in job_phases(vc.master, start - 1).items()})
    for ts, msg in job_log(vc.master, start - 1):
        if msg.startswith("Migrating instance"):
            sample.marks["log_migrating"] = ts - start
        m = _COMPLETED.match(msg)
        if msg.startswith("Migration completed"):
            sample.marks["log_completed"] = ts - start
            if m:
                # The LU times from just before its instance_migrate RPC.
                sample.marks["migrate_rpc"] = ts - float(m[1]) - start
                sample.qemu_total_ms, sample.downtime_ms = float(m[2]), float(m[3])
    if alive(src_pid) or pid_in(pidfile(dst)) is None:
        raise BenchError(f"after the migration {INSTANCE} does not run on {dst.name} only")
    return start, end, sample


# --- the floor: raw QEMU + QMP ------------------------------------------------------------


async def exited(pidfd: int) -> None:
    """Until the process is gone: every thread ended, its memory freed and its
    files (the tap) closed, as Corral's node daemon waits for (a pidfd turns
    readable then). The main thread's zombie shows ~20 ms earlier, while the
    kernel still frees the guest's memory."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, TIMEOUT)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


@dataclass
class FloorVM:
    """The floor's guest: one QEMU at a time, started by hand on either node."""

    guest: testguest.GuestImage
    machine: str
    dir: Path
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    pids: dict[str, int] = field(default_factory=dict)  # node name -> QEMU pid

    def ctl(self, node: vcl.VNode, what: str) -> Path:
        return self.dir / node.name / what

    def prepare(self, nodes: list[vcl.VNode]) -> None:
        for node in nodes:
            (self.dir / node.name).mkdir(parents=True, exist_ok=True)

    def argv(self, node: vcl.VNode, tap_fd: int, incoming: str | None) -> list[str]:
        """Corral's argv for its instance (as its QEMU runs), with the floor's paths."""

        def c(what: str) -> str:
            return str(self.ctl(node, what))

        kargs = f"quiet corral.ip.{FLOOR_MAC.replace(':', '')}={FLOOR_IP}/24"
        argv = [
            KVM,
            "-name",
            "migfloor",
            "-uuid",
            self.uuid,
            "-m",
            str(MEMORY_MIB),
            "-smp",
            "1",
            "-machine",
            f"{self.machine},accel=tcg",
            "-nodefaults",
            "-no-user-config",
            "-pidfile",
            c("pid"),
            "-daemonize",
            "-D",
            c("qemu.log"),
            "-no-shutdown",
            "-device",
            "virtio-balloon-pci,id=balloon,bus=pci.0,addr=0x3",
            "-monitor",
            f"unix:{c('monitor')},server=on,wait=off",
            "-chardev",
            f"socket,id=serial0,path={c('serial')},server=on,wait=off,"
            f"logfile={c('console.log')},logappend=on",
            "-serial",
            "chardev:serial0",
            "-display",
            "none",
            "-kernel",
            str(self.guest.kernel),
            "-initrd",
            str(self.guest.initrd),
            "-append",
            f"{kargs} console=ttyS0,{SERIAL_SPEED}",
            "-qmp",
            f"unix:{c('qmp')},server=on,wait=off",
            "-netdev",
            f"tap,id=nic0,fd={tap_fd}",
            "-device",
            f"virtio-net-pci,id=nic0,bus=pci.0,addr=0xc,netdev=nic0,mac={FLOOR_MAC}",
        ]
        return argv + (["-incoming", incoming] if incoming else [])

    def start(self, node: vcl.VNode, incoming: str | None = None) -> int:
        """Start QEMU on ``node``; returns once it daemonized (ready, as for Corral).

        The tap is made as Corral's node daemon makes it: opened on
        ``/dev/net/tun`` (not persistent: it vanishes with the last fd),
        enslaved to ``br0``, handed to QEMU as ``fd=``.
        """
        self.ctl(node, "pid").unlink(missing_ok=True)

        def launch() -> subprocess.CompletedProcess[bytes]:  # inside the node's namespace
            with open_tap(vnet_hdr=True) as tap:
                brioctl.enslave(tap.name, "br0")
                return subprocess.run(
                    self.argv(node, tap.fd, incoming),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    pass_fds=[tap.fd],
                    start_new_session=True,
                    check=False,
                )

        res = net.in_ns(node.ns, launch)
        pid = pid_in(self.ctl(node, "pid"))
        if pid is not None:
            self.pids[node.name] = pid
        if res.returncode != 0 or pid is None:
            raise BenchError(f"floor QEMU on {node.name} failed ({res.returncode}): {res.stderr!r}")
        return pid

    async def qmp(self, node: vcl.VNode) -> QMPClient:
        client = QMPClient(f"floor-{node.name}")
        await client.connect(str(self.ctl(node, "qmp")))
        return client

    async def migrate(self, src: vcl.VNode, dst: vcl.VNode) -> tuple[float, float, Sample]:
        marks: dict[str, float] = {}
        src_pid = self.pids[src.name]
        sq = await self.qmp(src)  # Corral's noded keeps its monitor connected, too
        try:
            start = time.time()
            await asyncio.to_thread(self.start, dst, f"tcp:{dst.mgmt_ip}:{FLOOR_PORT}")
            marks["target_qemu"] = time.time() - start
            await sq.execute(
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "return-path", "state": True}]},
            )
            await sq.execute(
                "migrate-set-parameters",
                {"max-bandwidth": BANDWIDTH_MIB << 20, "downtime-limit": DOWNTIME_MS},
            )
            await sq.execute("migrate", {"uri": f"tcp:{dst.mgmt_ip}:{FLOOR_PORT}"})
            marks["migrate_sent"] = time.time() - start
            while True:
                info = await sq.execute("query-migrate")
                assert isinstance(info, dict)
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(FLOOR_POLL)
            marks["completed"] = time.time() - start
            if info["status"] != "completed":
                raise BenchError(f"floor migration {src.name} -> {dst.name}: {info}")
            pidfd = os.pidfd_open(src_pid)
            with contextlib.suppress(Exception):
                await sq.execute("quit")
        finally:
            with contextlib.suppress(Exception):
                await sq.disconnect()
        await exited(pidfd)
        end = time.time()
        del self.pids[src.name]
        sample = Sample(
            total=end - start,
            qemu_total_ms=info.get("total-time"),
            downtime_ms=info.get("downtime"),
            marks=marks,
        )
        return start, end, sample

    def stop_all(self) -> None:
        """Kill the floor's QEMUs by PID (checked against their argv: our directory)."""
        _kvmbench.kill_ours(self.pids, self.dir)


# --- setup --------------------------------------------------------------------------------


def first_devices(log: Path, mac: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        data = log.read_bytes() if log.exists() else b""
        for raw in data.splitlines():
            line = testguest.parse_line(raw)
            if isinstance(line, DevicesLine) and mac in line.macs:
                return
        time.sleep(0.05)
    raise BenchError(f"no DEVICES line with {mac} in {log}")


def setup_corral(vc: vcl.VCluster, guest: testguest.GuestImage) -> None:
    gnt(vc, *guest.enable_kvm_argv())
    kargs = f"quiet corral.ip.{MAC.replace(':', '')}={IP}/24"
    gnt(
        vc,
        "gnt-instance",
        "add",
        "-t",
        "diskless",
        "-B",
        f"memory={MEMORY_MIB}M,vcpus=1",
        "--net",
        f"0:mac={MAC},link=br0",
        "-H",
        f"kvm:kernel_args={kargs},migration_bandwidth={BANDWIDTH_MIB},"
        f"migration_downtime={DOWNTIME_MS},migration_port={CORRAL_PORT}",
        "-n",
        vc.master.name,
        "--no-name-check",
        "--no-ip-check",
        "-o",
        "noop",
        INSTANCE,
    )
    node = vc.master
    if wait_report(node, INSTANCE, lambda ln: isinstance(ln, DevicesLine), timeout=TIMEOUT) is None:
        raise BenchError(f"{INSTANCE} never reported its devices")


# --- report -------------------------------------------------------------------------------


def med(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


Pick = Callable[[Sample], float | None]


def report(corral: list[Sample], floor: list[Sample], note: str) -> None:
    def row(name: str, ss: list[Sample], pick: Pick, unit: str = "s", txt: str = "") -> Row:
        vals = [pick(s) for s in ss]
        got = [float(v) for v in vals if v is not None]
        return Row(name, got or [float("nan")], unit, txt)

    def mark(key: str) -> Pick:
        return lambda s: s.marks.get(key)

    rows = [
        row(
            "gnt-instance migrate -f, CLI start -> exit",
            corral,
            lambda s: s.total,
            txt="target: ratio <= 1.5",
        ),
        row("  job received (CLI start-up, submit)", corral, mark("received")),
        row("  opcode executing (locks held)", corral, mark("op_exec")),
        row("  'Migrating' logged (prerequisite RPCs done)", corral, mark("log_migrating")),
        row("  target QEMU pid file written", corral, mark("target_qemu")),
        row("  instance_migrate RPC sent (accept_instance done)", corral, mark("migrate_rpc")),
        row("  QEMU's migration total", corral, lambda s: _ms(s.qemu_total_ms)),
        row(
            "  completed - sent - QEMU total (polling, finalize dst, commit)",
            corral,
            lambda s: _rest(s),
        ),
        row("  'Migration completed' logged (finalize dst)", corral, mark("log_completed")),
        row("  source QEMU gone (finalize src)", corral, mark("source_gone")),
        row("  job finished", corral, mark("job_end")),
        row("raw QMP migration, dst start -> source gone", floor, lambda s: s.total),
        row("  destination QEMU daemonized", floor, mark("target_qemu")),
        row("  migrate sent", floor, mark("migrate_sent")),
        row("  QEMU's migration total", floor, lambda s: _ms(s.qemu_total_ms)),
        row("  query-migrate: completed", floor, mark("completed")),
        row("QEMU downtime: Corral", corral, lambda s: s.downtime_ms, "ms"),
        row("QEMU downtime: floor", floor, lambda s: s.downtime_ms, "ms"),
        row("pings lost (10 ms): Corral", corral, lambda s: s.lost, "pings", "<= floor + 1"),
        row("pings lost (10 ms): floor", floor, lambda s: s.lost, "pings"),
    ]
    print_table(f"Live migration benchmark ({note})", rows)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"migration parameters, both sides: {PARAMS}")
    ct, ft = med([s.total for s in corral]), med([s.total for s in floor])
    cl = med([None if s.lost is None else float(s.lost) for s in corral])
    fl = med([None if s.lost is None else float(s.lost) for s in floor])
    print()
    print(f"migrate_total: corral={_num(ct)}s floor={_num(ft)}s ratio={ct / ft:.2f}")
    if fl > 0:
        print(f"migrate_pings_lost: corral={_num(cl)} floor={_num(fl)} ratio={cl / fl:.2f}")
    else:  # no ratio against a floor of zero: Corral's value alone
        print(f"migrate_pings_lost: value={_num(cl)}")


def _rest(s: Sample) -> float | None:
    done, sent = s.marks.get("log_completed"), s.marks.get("migrate_rpc")
    if done is None or sent is None or s.qemu_total_ms is None:
        return None
    return done - sent - s.qemu_total_ms / 1000.0


def _ms(v: float | None) -> float | None:
    return None if v is None else v / 1000.0


# --- main ---------------------------------------------------------------------------------


def floor_in_loop(
    fl: FloorVM, src: vcl.VNode, dst: vcl.VNode, loop: asyncio.AbstractEventLoop
) -> tuple[float, float, Sample]:
    return asyncio.run_coroutine_threadsafe(fl.migrate(src, dst), loop).result()


async def measure(
    vc: vcl.VCluster, fl: FloorVM, client: str, runs: int
) -> tuple[list[Sample], list[Sample]]:
    n1, n2 = vc.nodes
    where = {"corral": n1, "floor": n1}
    corral: list[Sample] = []
    floor: list[Sample] = []
    loop = asyncio.get_running_loop()
    stalls = 0
    for i in range(runs + 1):  # the first round is the warm-up
        got: dict[str, Sample] = {}
        hops: dict[str, str] = {}
        for who in ("corral", "floor") if i % 2 == 0 else ("floor", "corral"):
            while who not in got:
                src = where[who]
                dst = n2 if src is n1 else n1
                # Off the event loop (the pings and the CLI block); the floor's
                # QMP work comes back to it.
                if who == "corral":
                    run: Run = functools.partial(corral_migrate, vc, src, dst)
                    address = IP
                else:
                    run = functools.partial(floor_in_loop, fl, src, dst, loop)
                    address = FLOOR_IP
                try:
                    got[who] = await asyncio.to_thread(with_pings, client, address, run)
                except GuestStalled as err:
                    stalls += 1
                    if stalls > MAX_STALLS:
                        raise BenchError(f"{err}; {stalls} stalls, giving up") from None
                    print(
                        f"round {i}: {who}: {err} (guest stall, see GuestStalled); "
                        "running it again",
                        file=sys.stderr,
                    )
                where[who] = dst  # the migration went through either way
                hops[who] = f"{src.name}->{dst.name}"
        if i > 0:
            corral.append(got["corral"])
            floor.append(got["floor"])
        c, f = got["corral"], got["floor"]
        print(
            f"round {i}{' (warm-up)' if i == 0 else ''}: "
            f"corral {hops['corral']} {c.total:.3f}s lost={c.lost} downtime={c.downtime_ms}ms  "
            f"floor {hops['floor']} {f.total:.3f}s lost={f.lost} downtime={f.downtime_ms}ms "
            f"load={os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
    if stalls:
        print(f"guest stalls (rounds run again): {stalls}")
    return corral, floor


def main() -> int:
    kb = _kvmbench.start("migrate", KVM, __doc__, 10, "measured migrations of each (default 10)")
    note, guest, machine, work = kb.note, kb.guest, kb.machine, kb.work
    print(f"migration parameters, both sides: {PARAMS}; machine {machine}", file=sys.stderr)
    try:
        with signals_as_exit(), vcl.virtual_cluster(2, base=work / "vc") as vc:
            fl = FloorVM(guest, machine, work / "floor")
            try:
                fl.prepare(vc.nodes)
                fl.start(vc.master)  # boots while Corral's instance is added
                setup_corral(vc, guest)
                first_devices(fl.ctl(vc.master, "console.log"), FLOOR_MAC)
                client = vcl.add_guest_ns(vc, vc.master, 1, CLIENT_IP)
                corral, floor = asyncio.run(measure(vc, fl, client, kb.runs))
            finally:
                fl.stop_all()
    except (BenchError, CorralError) as err:
        raise SystemExit(f"migration benchmark failed: {err}") from None
    except KeyboardInterrupt:
        print("\nmigration benchmark interrupted; cluster and QEMUs removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(corral, floor, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
