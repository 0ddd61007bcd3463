"""OVN live-migration benchmark: the network outage of ``gnt-instance migrate`` on OVN.

Builds a throw-away three-node virtual cluster with OVN (:mod:`corral.vcluster.ovn`:
NB/SB/northd on node1, every node a chassis, geneve between them, userspace
datapath), enables KVM with the test guest under TCG, and makes a Corral
network backed by a logical switch (``gnt-network add --ovn``, connected to
the default group). Three diskless 128 MiB guests (same image, memory,
machine type and migration parameters; each its own MAC/IP) move back and
forth between node1 and node2, interleaved (every round moves each once, the
order rotating, the direction alternating). node3 carries only the pingers,
so a pinger is never on either end of a move.

The pinger stands in for "an instance on another node": a namespace on a
logical port of the switch bound on node3 (an OVS internal port on node3's
``br-int``, :func:`corral.vcluster.ovn.add_port_ns`), running ``ping -n -D
-i 0.01 -W 1`` (a test guest's busybox can neither ping every 10 ms nor
report each packet). For the bridged floor, a namespace on node3's ``br0``
(the VM network spanning the nodes) pings the same way.

* ``ovn_outage`` (Corral): ``gnt-instance migrate -f -n <dst>`` of an instance with
  one NIC on the OVN network, Corral's workflow (port requested on both
  chassis with ``activation-strategy=rarp`` before the copy, narrowed to the
  destination after). The outage is the longest silence between two
  consecutive replies (``-D`` timestamps), from the last reply before the
  migration began to the first one after it ended; also the requests lost
  (sequence gaps).
* floor: the same for a Corral instance on ``br0`` (bridged) migrated by
  Corral in the same run: no control plane moves anything at the switch-over,
  so its silence is QEMU's own guest-visible one (stop-and-copy, resume,
  self-announce).
* ``naive_outage``: the naive move, by hand with raw QMP (as
  bench/migrate.py's floor): a raw QEMU with Corral's argv on its own
  logical port (made with :class:`~corral.network.ovn_nb.NbClient`,
  ``requested-chassis`` = its node), its tap on ``br-int`` with ``iface-id``;
  on the destination a tap plugged into ``br-int`` *without* ``iface-id``,
  QEMU ``-incoming``, ``migrate``, the ``MIGRATION`` event ``completed``;
  only then ``iface-id`` on the destination Interface and NB
  ``requested-chassis=<dst>`` (together), source ``quit``, its port removed.

Where the silence goes: the SB ``Port_Binding`` of each moving port is
watched (:class:`~corral.network.ovn_sb.BindingWatcher`); rows date, from
the silence's start (the last reply before it), the destination's activation
(``additional-chassis-activated``: it saw QEMU's RARP), the binding narrowed
to the destination, and for the naive move when ``completed`` was seen and
the port bound. SB times are when the update reached this process.

Targets (issue 7): ``ovn_outage`` ratio <= 1.3, and Corral's outage below
``naive_outage``. Reported, not asserted.

Run as root: ``.venv/bin/python bench/ovn_migrate.py [--runs N]`` (or
``make bench``); about 3 minutes for 6 runs (2 cores).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _kvmbench
from _ovnbench import BindingEvent, BindingTimeline, NaiveVM, Outage, Pinger
from _util import Row, figure, print_table
from boot import KVM, BenchError, gnt, pid_in, signals_as_exit
from corral import testguest
from corral import vcluster as vcl
from corral.demotools import wait_report
from corral.errors import CorralError
from corral.network import ovsdb
from corral.network.ovn_nb import NbClient, PortSpec
from corral.testguest import DevicesLine
from corral.vcluster import net
from corral.vcluster import ovn as vovn
from corral.vcluster.model import BIN
from migrate import alive, first_devices, job_log

NET = "ovnnet"
OVN_INST, BR_INST = "ovnmig1", "brmig1"
OVN_MAC, OVN_IP = "aa:00:00:3b:00:01", "203.0.113.81"
BR_MAC, BR_IP = "aa:00:00:3b:00:02", "203.0.113.82"
NAIVE_MAC, NAIVE_IP = "aa:00:00:3b:00:03", "203.0.113.83"
NAIVE_LSP = str(uuid.uuid4())  # the naive guest's logical port (not Corral's NIC)
CLIENT_MAC, CLIENT_IP = "aa:00:00:3b:00:fe", "203.0.113.91"  # on the logical switch
CLIENT_LSP = str(uuid.uuid4())
BR_CLIENT_IP = "203.0.113.92"  # on br0
MEMORY_MIB = 128
BANDWIDTH_MIB = 1000  # migration_bandwidth (MiB/s), every guest
DOWNTIME_MS = 50  # migration_downtime (ms), every guest
NAIVE_PORT = 8113  # Corral's instances use the default 8102, one at a time
SERIAL_SPEED = 38400  # Corral's default
PING_INTERVAL = 0.01
SETTLE = 0.3  # seconds of clean pings before each migration
TAIL = 0.3  # ... and after it: a second silence after the end still counts
TIMEOUT = 120.0
RECOVER_TIMEOUT = 30.0  # for the first reply after a migration
KINDS = ("ovn", "bridged", "naive")
PARAMS = (
    f"max-bandwidth {BANDWIDTH_MIB} MiB/s, downtime-limit {DOWNTIME_MS} ms, return-path; "
    f"guests {MEMORY_MIB} MiB, 1 vCPU, TCG; ping every {PING_INTERVAL * 1000:.0f} ms from node3"
)

_COMPLETED = re.compile(
    r"Migration completed in ([\d.]+) s \(QEMU: total (\d+) ms, downtime (\d+) ms\)"
)


@dataclass
class Sample:
    """One migration: its span (wall times), what the pinger saw, marks (wall times)."""

    start: float
    end: float
    outage: Outage
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.end - self.start

    def since_gap(self, key: str) -> float | None:
        """Mark ``key`` in ms from the silence's start (the last reply before it)."""
        v = self.marks.get(key)
        return None if v is None else (v - self.outage.gap_start) * 1000


Run = Callable[[], tuple[float, float, dict[str, float]]]


@dataclass
class Bench:
    vc: vcl.VCluster
    naive: NaiveVM
    ovn_ns: str  # the pinger on the logical switch (node3)
    br_ns: str  # the pinger on br0 (node3)
    ovn_port: BindingTimeline  # Corral's instance's port
    naive_port: BindingTimeline


def with_pings(ns: str, address: str, run: Run, diag: Callable[[], str] = str) -> Sample:
    """``run()`` with pings around it; ``diag()`` says more if the guest never answers."""
    pinger = Pinger(ns, address, PING_INTERVAL)
    try:
        if not pinger.wait_reply(0.0, 15.0):
            raise BenchError(f"{address} does not answer ping before the migration")
        time.sleep(SETTLE)
        start, end, marks = run()
        # A long outage is a result (it shows in max/p99); only none at all fails.
        if not pinger.wait_reply(end + TAIL, RECOVER_TIMEOUT):
            raise BenchError(
                f"{address} does not answer ping within {RECOVER_TIMEOUT:g}s after the "
                f"migration {diag()}"
            )
    finally:
        pinger.stop()
    outage = pinger.outage(start, end + TAIL)
    if outage is None:
        raise BenchError(f"no replies from {address} around the migration")
    return Sample(start, end, outage, marks)


# --- Corral ------------------------------------------------------------------------------


def pidfile(node: vcl.VNode, inst: str) -> Path:
    return node.paths.hv_run_dir("kvm") / "pid" / inst


def corral_migrate(
    vc: vcl.VCluster, inst: str, src: vcl.VNode, dst: vcl.VNode
) -> tuple[float, float, dict[str, float]]:
    src_pid = pid_in(pidfile(src, inst))
    if src_pid is None or not alive(src_pid) or pidfile(dst, inst).exists():
        raise BenchError(f"{inst} is not running on {src.name} only before the migration")
    start = time.time()
    cli = net.popen_in(
        vc.master.ns,
        [str(BIN / "gnt-instance"), "migrate", "-f", "-n", dst.name, inst],
        env=vc.master.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = cli.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        cli.kill()
        out, _ = cli.communicate()
    end = time.time()
    if cli.returncode != 0:
        raise BenchError(f"gnt-instance migrate {inst} failed ({cli.returncode}): {out.decode()}")
    marks: dict[str, float] = {}
    for ts, msg in job_log(vc.master, start - 1):
        m = _COMPLETED.match(msg)
        if m:
            marks["log_completed"] = ts
            marks["qemu_total-time"], marks["qemu_downtime"] = float(m[2]), float(m[3])
    dst_pid = pid_in(pidfile(dst, inst))
    if alive(src_pid) or dst_pid is None or not alive(dst_pid):
        raise BenchError(f"after the migration {inst} does not run on {dst.name} only")
    return start, end, marks


def sb_marks(s: Sample, timeline: BindingTimeline, dst: str) -> None:
    """When the SB showed the destination claiming the port (as additional
    chassis, blocked), activated, and bound alone."""

    def additional(e: BindingEvent) -> bool:
        return dst in e.additional

    def activated(e: BindingEvent) -> bool:
        return dst in e.activated

    def alone(e: BindingEvent) -> bool:
        return e.chassis == dst and not e.additional

    for key, pred in (
        ("sb_additional", additional),
        ("sb_activated", activated),
        ("sb_alone", alone),
    ):
        at = timeline.first(s.start, pred)
        if at is not None:
            s.marks[key] = at


# --- setup -------------------------------------------------------------------------------


def add_instance(vc: vcl.VCluster, name: str, nic: str, mac: str, ip: str) -> None:
    kargs = f"quiet corral.ip.{mac.replace(':', '')}={ip}/24"
    gnt(
        vc,
        "gnt-instance",
        "add",
        "-t",
        "diskless",
        "-B",
        f"memory={MEMORY_MIB}M,vcpus=1",
        "--net",
        nic,
        "-H",
        f"kvm:kernel_args={kargs},migration_bandwidth={BANDWIDTH_MIB},"
        f"migration_downtime={DOWNTIME_MS}",
        "-n",
        vc.master.name,
        "--no-name-check",
        "--no-ip-check",
        "-o",
        "noop",
        name,
    )


def make_naive(vc: vcl.VCluster, nb: NbClient, kb: _kvmbench.KvmBench) -> NaiveVM:
    return NaiveVM(
        guest=kb.guest,
        machine=kb.machine,
        dir=kb.work / "naive",
        name="ovnnaive",
        mac=NAIVE_MAC,
        ip=NAIVE_IP,
        lsp=NAIVE_LSP,
        nb=nb,
        memory_mib=MEMORY_MIB,
        bandwidth_mib=BANDWIDTH_MIB,
        downtime_ms=DOWNTIME_MS,
        port=NAIVE_PORT,
        serial_speed=SERIAL_SPEED,
    )


def setup(vc: vcl.VCluster, guest: testguest.GuestImage, nb: NbClient, naive: NaiveVM) -> Bench:
    n1, _, n3 = vc.nodes
    gnt(vc, *guest.enable_kvm_argv())
    gnt(vc, "gnt-network", "add", "--network=203.0.113.0/24", "--ovn", NET)
    gnt(vc, "gnt-network", "connect", NET, "default")
    # Hand-made ports (corral-instance names no instance: a watcher pass would
    # delete them, and none runs in the virtual cluster).
    nb.ensure_port(NET, PortSpec(CLIENT_LSP, CLIENT_MAC, CLIENT_IP, "bench-pinger", n3.name))
    nb.ensure_port(NET, PortSpec(NAIVE_LSP, NAIVE_MAC, NAIVE_IP, "bench-naive", n1.name))
    naive.start(n1, NAIVE_LSP)  # boots while Corral's instances are added
    add_instance(vc, OVN_INST, f"0:network={NET},mac={OVN_MAC},ip={OVN_IP}", OVN_MAC, OVN_IP)
    add_instance(vc, BR_INST, f"0:mac={BR_MAC},link=br0", BR_MAC, BR_IP)
    for inst in (OVN_INST, BR_INST):
        if wait_report(n1, inst, lambda ln: isinstance(ln, DevicesLine), timeout=TIMEOUT) is None:
            raise BenchError(f"{inst} never reported its devices")
    first_devices(naive.ctl(n1, "console.log"), NAIVE_MAC)
    ovn_ns = vovn.add_port_ns(vc, n3, CLIENT_LSP, CLIENT_MAC, f"{CLIENT_IP}/24")
    br_ns = vcl.add_guest_ns(vc, n3, 1, BR_CLIENT_IP)
    out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "nic.uuids", OVN_INST)
    sb = vovn.central(vc).sb_unix
    ovn_lsp = out.strip().split(",")[0]
    return Bench(
        vc,
        naive,
        ovn_ns,
        br_ns,
        BindingTimeline(sb, ovn_lsp),
        BindingTimeline(sb, NAIVE_LSP),
    )


# --- measuring ---------------------------------------------------------------------------


def naive_in_loop(
    b: Bench, src: vcl.VNode, dst: vcl.VNode, loop: asyncio.AbstractEventLoop
) -> tuple[float, float, dict[str, float]]:
    return asyncio.run_coroutine_threadsafe(b.naive.migrate(src, dst), loop).result()


async def measure(b: Bench, runs: int) -> dict[str, list[Sample]]:
    n1, n2, _ = b.vc.nodes
    where = dict.fromkeys(KINDS, n1)
    samples: dict[str, list[Sample]] = {k: [] for k in KINDS}
    loop = asyncio.get_running_loop()
    for i in range(runs + 1):  # the first round is the warm-up
        got: dict[str, Sample] = {}
        order = KINDS[i % 3 :] + KINDS[: i % 3]
        for who in order:
            src = where[who]
            dst = n2 if src is n1 else n1
            # Off the event loop (pings and the CLI block); the naive move's
            # QMP work comes back to it.
            what = f"({who}, {src.name} -> {dst.name}"
            if who == "ovn":
                run: Run = functools.partial(corral_migrate, b.vc, OVN_INST, src, dst)
                diag = functools.partial(_binding, what, b.ovn_port)
                s = await asyncio.to_thread(with_pings, b.ovn_ns, OVN_IP, run, diag)
                sb_marks(s, b.ovn_port, dst.name)
            elif who == "bridged":
                run = functools.partial(corral_migrate, b.vc, BR_INST, src, dst)
                diag = functools.partial(str, what + ")")
                s = await asyncio.to_thread(with_pings, b.br_ns, BR_IP, run, diag)
            else:
                run = functools.partial(naive_in_loop, b, src, dst, loop)
                diag = functools.partial(_binding, what, b.naive_port)
                s = await asyncio.to_thread(with_pings, b.ovn_ns, NAIVE_IP, run, diag)
                sb_marks(s, b.naive_port, dst.name)
            got[who] = s
            where[who] = dst
        if i > 0:
            for k in KINDS:
                samples[k].append(got[k])
        line = "  ".join(
            f"{k} {got[k].outage.silence * 1000:.0f}ms lost={got[k].outage.lost} "
            f"downtime={got[k].marks.get('qemu_downtime', float('nan')):.0f}ms"
            for k in order
        )
        warm = " (warm-up)" if i == 0 else ""
        hop = f"{n1.name}->{n2.name}" if i % 2 == 0 else f"{n2.name}->{n1.name}"
        print(f"round {i}{warm} {hop}: {line}  load={os.getloadavg()[0]:.2f}", file=sys.stderr)
    return samples


def _binding(what: str, timeline: BindingTimeline) -> str:
    return f"{what}; SB binding now: {timeline.current})"


# --- report ------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(s: dict[str, list[Sample]], note: str) -> None:
    ovn, br, naive = s["ovn"], s["bridged"], s["naive"]
    Pick = Callable[[Sample], float | None]

    def row(name: str, ss: list[Sample], pick: Pick, unit: str = "ms", txt: str = "") -> Row:
        got = [float(v) for v in map(pick, ss) if v is not None]
        return Row(name, got or [float("nan")], unit, txt)

    def silence(x: Sample) -> float:
        return x.outage.silence * 1000

    def gap(key: str) -> Pick:
        return lambda x: x.since_gap(key)

    def reply_after(key: str) -> Pick:
        def pick(x: Sample) -> float | None:
            at = x.marks.get(key)
            return None if at is None else (x.outage.gap_end - at) * 1000

        return pick

    def qemu(key: str) -> Pick:
        return lambda x: x.marks.get(f"qemu_{key}")

    def ratio(name: str, a: list[Sample], b: list[Sample], txt: str) -> Row:
        vals = [x.outage.silence / y.outage.silence for x, y in zip(a, b, strict=True)]
        return Row(name, vals or [float("nan")], "x", txt)

    def lost(x: Sample) -> float:
        return x.outage.lost

    rows = [
        row("ping silence: Corral, OVN workflow", ovn, silence, txt="ovn_outage"),
        row("  SB: dst claims (additional, blocked) - silence start", ovn, gap("sb_additional")),
        row("  SB: dst activated (RARP seen) - silence start", ovn, gap("sb_activated")),
        row("  first reply - SB dst activated", ovn, reply_after("sb_activated")),
        row("  'Migration completed' logged - silence start", ovn, gap("log_completed")),
        row("  SB: bound to dst alone (finish step) - silence start", ovn, gap("sb_alone")),
        row("  QEMU downtime", ovn, qemu("downtime")),
        row("  QEMU total", ovn, qemu("total-time")),
        row("  gnt-instance migrate -f, CLI start -> exit", ovn, lambda x: x.total, "s"),
        row("ping silence: floor, bridged (br0), Corral", br, silence, txt="QEMU's own"),
        row("  QEMU downtime", br, qemu("downtime")),
        row("  QEMU total", br, qemu("total-time")),
        row("  gnt-instance migrate -f, CLI start -> exit", br, lambda x: x.total, "s"),
        row("ping silence: naive (iface-id after completed)", naive, silence, txt="naive_outage"),
        row("  'completed' event - silence start", naive, gap("completed")),
        row("  iface-id + NB requested-chassis set - silence start", naive, gap("bound")),
        row("  SB: bound to dst alone - silence start", naive, gap("sb_alone")),
        row("  first reply - SB bound to dst", naive, reply_after("sb_alone")),
        row("  QEMU downtime", naive, qemu("downtime")),
        row("  QEMU total", naive, qemu("total-time")),
        row("  raw QMP procedure, dst start -> source port removed", naive, lambda x: x.total, "s"),
        ratio("silence ratio Corral / floor (per round)", ovn, br, "target <= 1.3"),
        ratio("silence ratio Corral / naive (per round)", ovn, naive, "target < 1"),
        row("pings lost (10 ms): Corral, OVN", ovn, lost, "pings"),
        row("pings lost (10 ms): floor, bridged", br, lost, "pings"),
        row("pings lost (10 ms): naive", naive, lost, "pings"),
    ]
    print_table(f"OVN live migration: network outage ({note})", rows)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"parameters: {PARAMS}")
    c, f, n = (med([silence(x) for x in ss]) for ss in (ovn, br, naive))
    print()
    print(figure("ovn_outage", c, f))
    print(figure("naive_outage", n))


# --- main --------------------------------------------------------------------------------


def main() -> int:
    kb = _kvmbench.start("ovn_migrate", KVM, __doc__, 6, "measured rounds (default 6)")
    print(f"parameters: {PARAMS}; machine {kb.machine}", file=sys.stderr)
    try:
        with signals_as_exit(), vcl.virtual_cluster(3, base=kb.work / "vc", ovn=True) as vc:
            nb = NbClient(vovn.central(vc).nb_unix)
            naive = make_naive(vc, nb, kb)
            b: Bench | None = None
            try:
                b = setup(vc, kb.guest, nb, naive)
                b.ovn_port.start()
                b.naive_port.start()
                samples = asyncio.run(measure(b, kb.runs))
            finally:
                if b is not None:
                    b.ovn_port.stop()
                    b.naive_port.stop()
                naive.stop_all()
                ovsdb.close_all()  # before the databases go
    except (BenchError, CorralError) as err:
        raise SystemExit(f"OVN migration benchmark failed: {err}") from None
    except KeyboardInterrupt:
        print("\nOVN migration benchmark interrupted; cluster and QEMUs removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(kb.work, ignore_errors=True)
    report(samples, kb.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
