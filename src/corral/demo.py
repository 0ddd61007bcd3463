"""``make demo``: a narrated tour of a 2-node virtual cluster running a real VM.

Builds the test guest (cached), then two nodes as network namespaces on this
host (``corral vcluster``), each with its own root and ``corral-noded``;
node1 runs ``corral-masterd`` and enrols node2 over mutual TLS. It enables
the KVM hypervisor, creates ``web1`` on node1 (QEMU under TCG, booting the
test guest; its disk a ``sharedfile`` every node sees), shows the guest's
console report and a ping from a client on node2's side of the VM network,
hot-adds a NIC and a disk (the guest reports both), live-migrates ``web1``
to node2 while the client pings it every 10 ms (pings lost are counted),
hot-removes the NIC there (node2's console shows it gone), then tours the
rest (fake-hypervisor instances, jobs, verify, node roles) and the
instance's lifecycle. Every command is printed with its output; a table
of what each step took ends the tour. Everything is torn down at the end,
also when a step fails, on Ctrl-C or on SIGTERM.

``--failover`` adds the master failover. Voting needs a majority of the
master candidates: with the master dead, one of two is not a majority, so
the tour shows the refusal and then the admin's override (``--no-voting``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from corral import bootstrap, testguest
from corral import demotools as dt
from corral import vcluster as vcl
from corral.daemons import noded

GUEST = "web1"
GUEST_NODE = "node1"  # where web1 starts; the live migration takes it to TARGET_NODE
TARGET_NODE = "node2"
GUEST_MAC = "aa:00:00:de:00:10"
GUEST_IP = "203.0.113.10"
HOT_MAC = "aa:00:00:de:00:11"  # the hot-added NIC; the guest gives it HOT_IP
HOT_IP = "203.0.113.11"
HOT_DISK = "32M"
GUEST_ADDRESSES = ((GUEST_MAC, GUEST_IP), (HOT_MAC, HOT_IP))
CLIENT_IP = "203.0.113.200"  # a namespace on node2's br0 standing in for a client
CLIENT_NODE = "node2"
# 1000 MiB/s: a 128 MiB idle guest moves in a fraction of a second (the
# default 32 MiB/s takes seconds); 50 ms is the pause QEMU may aim for.
MIGRATION_PARAMS = "migration_bandwidth=1000,migration_downtime=50"
BOOT_TIMEOUT = 180.0  # TCG on a loaded 2-core machine: generous


@dataclass(frozen=True)
class Step:
    """One command of the tour, typed on ``on`` (``"master"`` or a node name)."""

    argv: tuple[str, ...]
    title: str | None = None
    on: str = "master"
    expect_fail: bool = False
    show: Callable[[str], str] | None = None  # shortens stdout for the reader
    timeout: float = 120.0


def step(
    *argv: str,
    title: str | None = None,
    on: str = "master",
    expect_fail: bool = False,
    show: Callable[[str], str] | None = None,
    timeout: float = 120.0,
) -> Step:
    return Step(argv, title, on, expect_fail, show, timeout)


@dataclass(frozen=True)
class Timing:
    """One row of the closing summary."""

    step: str
    seconds: float | None  # None: the step failed
    detail: str = ""


class Tour:
    """Runs steps on the virtual cluster, prints them, counts the surprises."""

    def __init__(self, vc: vcl.VCluster) -> None:
        self.vc = vc
        self.master = "node1"
        self.failures = 0
        self.guest_node = GUEST_NODE  # where web1 runs now
        self.timings: list[Timing] = []
        self.last_took = 0.0  # seconds, of the last step run
        self.last_output = ""

    def time(self, step: str, seconds: float | None, detail: str = "") -> None:
        self.timings.append(Timing(step, seconds, detail))

    @contextlib.contextmanager
    def timed(self, step: str, detail: str = "") -> Iterator[None]:
        """Times a whole part of the tour; it failed if any of its steps did."""
        failures, started = self.failures, time.monotonic()
        try:
            yield
        finally:
            ok = self.failures == failures
            self.time(step, time.monotonic() - started if ok else None, detail)

    def section(self, title: str) -> None:
        print(f"\n# {title}")

    def note(self, text: str) -> None:
        print(f"   {text}")

    def fail(self, text: str) -> None:
        self.failures += 1
        print(f"!! {text}")

    def host(self, argv: Sequence[str]) -> None:
        print("[host]$ " + " ".join(shlex.quote(a) for a in argv))

    def run(self, s: Step) -> bool:
        node = self.vc.node(self.master if s.on == "master" else s.on)
        if s.title:
            self.section(s.title)
        print(f"[{node.name}]$ " + " ".join(shlex.quote(a) for a in s.argv))
        started = time.monotonic()
        try:
            r = vcl.run_in(node, list(s.argv), timeout=s.timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"no answer in {s.timeout:.0f}s")
            return False
        took = time.monotonic() - started
        self.last_took, self.last_output = took, r.stdout + r.stderr
        print(s.show(r.stdout) if s.show else r.stdout, end="")
        print(r.stderr, end="")
        if (r.returncode != 0) != s.expect_fail:
            self.fail(f"unexpected exit status {r.returncode}")
            return False
        print(f"   (exit {r.returncode}, {took * 1000:.0f} ms)")
        return True

    def run_all(self, steps: Sequence[Step]) -> None:
        for s in steps:
            self.run(s)


# --- the parts of the tour ------------------------------------------------------------


def build_guest() -> testguest.GuestImage:
    """``corral testguest build``, before any namespace exists (its failure costs nothing)."""
    print("\n# The test guest: a tiny Linux (Debian's cloud kernel, a busybox initramfs)")
    print("[host]$ corral testguest build")
    was_cached = testguest.cached() is not None
    started = time.monotonic()
    image = testguest.build()
    print(f"kernel  {image.kernel}\ninitrd  {image.initrd}\nversion {image.kernel_version}")
    how = "cached" if was_cached else "built now, cached for next time"
    print(f"   ({how}, {time.monotonic() - started:.1f}s)")
    return image


def bring_up(tour: Tour, started: float) -> None:
    """``corral vcluster up``: the namespaces exist (made in :func:`main`); init the cluster."""
    vc = tour.vc
    tour.section("Two nodes as network namespaces; node1 runs gnt-cluster init, node2 joins")
    tour.host(["corral", "vcluster", "up", "--nodes", "2"])
    vcl.init_cluster(vc, cluster_name="demo")
    print(f"virtual cluster {vc.prefix} up: {len(vc.nodes)} nodes, state in {vc.state_file}")
    for n in vc.nodes:
        print(f"  {n.name}  ns {n.ns}  {n.mgmt_ip}  root {n.root}  noded pid {n.noded_pid}")
    took = time.monotonic() - started
    tour.time("cluster up: 2 namespaces, init on node1, node2 joins", took)
    tour.note(
        "each node: mgmt0 on the management switch, bridge br0 on the VM network "
        f"(cluster up in {took:.1f}s)"
    )
    tour.run_all(
        [
            step(
                "gnt-node",
                "list",
                "-o",
                "name,role,pip,mtotal,mfree,ctotal",
                title="The nodes: node1 is the master, node2 an enrolled master candidate",
            ),
            step("gnt-cluster", "info", title="Cluster information"),
        ]
    )


def enable_kvm(tour: Tour, image: testguest.GuestImage) -> bool:
    tour.section("Enable KVM, booting the test guest's kernel and initramfs directly")
    tour.note(
        "kvm_flag=disabled runs QEMU under TCG: /dev/kvm on this machine is a software "
        "layer that cannot boot Linux (see TESTGUEST.md); real hosts keep KVM"
    )
    return tour.run(step(*image.enable_kvm_argv()))


def add_guest(tour: Tour) -> bool:
    """Create web1 and wait until the guest reports its NIC; False if it never does."""
    node = tour.vc.node(GUEST_NODE)
    # The guest sets an address on every NIC whose MAC has one here, also on
    # NICs hot-added later.
    kargs = " ".join(
        ["quiet"] + [f"corral.ip.{m.replace(':', '')}={ip}/24" for m, ip in GUEST_ADDRESSES]
    )
    ok = tour.run(
        step(
            "gnt-instance",
            "add",
            "-t",
            "sharedfile",
            "--disk",
            "0:size=64M",
            "-B",
            "memory=128M",
            "-o",
            "noop",
            "-n",
            GUEST_NODE,
            "--net",
            f"0:link=br0,mac={GUEST_MAC}",
            "-H",
            f"kvm:kernel_args={kargs},{MIGRATION_PARAMS}",
            GUEST,
            title=f"Create {GUEST} on {GUEST_NODE}: a real VM that sets {GUEST_IP} on the NIC "
            "with its MAC (kernel argument corral.ip.<mac>); its disk is a sharedfile, the same "
            "file on every node (a shared directory), so it can live-migrate",
            timeout=300,
        )
    )
    if not ok:
        tour.time(f"create {GUEST} (gnt-instance add)", None)
        return False
    tour.time(f"create {GUEST} (gnt-instance add)", tour.last_took, "disk created, QEMU started")
    started = time.monotonic()
    tour.section(f"The guest reports on its serial console ({dt.console_log(node, GUEST)}):")
    seen = dt.wait_report(node, GUEST, dt.devices_with(GUEST_MAC), timeout=BOOT_TIMEOUT)
    if seen is None:
        tour.fail(
            f"no DEVICES line in {BOOT_TIMEOUT:.0f}s; console:\n{dt.console_tail(node, GUEST)}"
        )
        tour.time(f"{GUEST} boots (to its first report)", None)
        return False
    for rep in seen:
        print(f"   {rep.raw}")
    took = time.monotonic() - started
    tour.time(f"{GUEST} boots (to its first report)", took, "after the add returned; TCG")
    tour.note(f"(first DEVICES report {took:.1f}s after the add returned)")
    return True


def show_guest(tour: Tour, client_ns: str) -> None:
    tour.run_all(
        [
            step(
                "gnt-instance",
                "list",
                "-o",
                "name,hypervisor,pnode,status,oper_ram,oper_vcpus,nic.macs",
                title="The instance as the cluster sees it (oper_ram: memory of the running VM)",
            ),
            step("gnt-instance", "info", GUEST, show=dt.shorten_info),
        ]
    )
    ping(
        tour,
        client_ns,
        f"A client on {CLIENT_NODE}'s br0 ({CLIENT_IP}) pings {GUEST} on {tour.guest_node} "
        "across the VM network",
    )


def ping(tour: Tour, client_ns: str, title: str, address: str = GUEST_IP) -> None:
    tour.section(title)
    argv = ["ip", "netns", "exec", client_ns, "ping", "-c", "3", address]
    answered = dt.wait_answers(client_ns, address)
    tour.host(argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    print(r.stdout + r.stderr, end="")
    if not answered or r.returncode != 0:
        tour.fail(f"{address} does not answer ping (exit {r.returncode})")


def confirm(
    tour: Tour,
    offset: int,
    done: Callable[[testguest.ConsoleLine], bool],
    started: float,
) -> float | None:
    """Wait for the guest's report ``done`` accepts (on the node it runs on now),
    print it; seconds since ``started``, or None if it never came."""
    node = tour.vc.node(tour.guest_node)
    seen = dt.wait_report(node, GUEST, done, offset=offset, timeout=60)
    if seen is None:
        tour.fail(f"the guest did not report it; console:\n{dt.console_tail(node, GUEST)}")
        return None
    took = time.monotonic() - started
    print(f"   console of {GUEST} on {node.name} ({took * 1000:.0f} ms after the command started):")
    print(f"   {seen[-1].raw}")
    return took


def hot_change(
    tour: Tour, label: str, s: Step, done: Callable[[testguest.ConsoleLine], bool]
) -> bool:
    """Run ``s`` (a modify of the running web1) and wait for the guest to report it."""
    offset = dt.log_size(tour.vc.node(tour.guest_node), GUEST)
    started = time.monotonic()
    seen = confirm(tour, offset, done, started) if tour.run(s) else None
    cmd = f"command {tour.last_took * 1000:.0f} ms"
    tour.time(f"{label} on {tour.guest_node} (until the guest reports it)", seen, cmd)
    return seen is not None


def hotplug(tour: Tour, client_ns: str) -> bool:
    """Hot-add a NIC (pinged on its own address) and a disk; True if the NIC is in."""
    nic = hot_change(
        tour,
        "hot-add NIC",
        step(
            "gnt-instance",
            "modify",
            "--net",
            f"add:mac={HOT_MAC},link=br0",
            GUEST,
            title=f"Hot-add a NIC to the running {GUEST} (QMP, no restart); the guest reports "
            f"it and sets {HOT_IP} on it",
        ),
        dt.devices_with(HOT_MAC),
    )
    if nic:
        ping(tour, client_ns, f"The new NIC answers on {HOT_IP}", HOT_IP)
    hot_change(
        tour,
        "hot-add disk",
        step(
            "gnt-instance",
            "modify",
            "--disk",
            f"add:size={HOT_DISK}",
            GUEST,
            title=f"Hot-add a {HOT_DISK} disk (a new file in the shared directory); the guest "
            "reports a second disk (name/serial/sectors)",
        ),
        dt.devices_with_disks(2),
    )
    return nic


def migrate(tour: Tour, client_ns: str) -> bool:
    """Live-migrate web1 to node2 with a ping every 10 ms; True if it moved."""
    tour.section(
        f"Live-migrate {GUEST} from {tour.guest_node} to {TARGET_NODE} while the client pings "
        f"it every 10 ms ({MIGRATION_PARAMS.replace(',', ', ')})"
    )
    tour.host(["ip", "netns", "exec", client_ns, "ping", "-i", "0.01", GUEST_IP, "&"])
    pinger = dt.Pinger(client_ns, GUEST_IP, 0.01)
    ok = False
    start = end = 0.0
    try:
        if not pinger.wait_reply(0.0, 30.0):
            tour.fail(f"{GUEST_IP} does not answer before the migration")
        time.sleep(0.3)
        start = time.time()
        ok = tour.run(step("gnt-instance", "migrate", "-f", GUEST, timeout=300))
        end = time.time()
        if not pinger.wait_reply(end, 10.0):
            tour.fail(f"{GUEST_IP} does not answer after the migration")
    finally:
        pinger.stop()
    lost = pinger.lost(start, end) if ok else None
    downtime = dt.migration_downtime(tour.last_output) if ok else None
    tour.note(
        f"ping: {pinger.answered} answered; {'?' if lost is None else lost} lost while "
        f"{GUEST} moved (one request every 10 ms); QEMU's downtime {downtime} ms"
    )
    if ok:
        tour.guest_node = TARGET_NODE
    tour.time(
        f"live migration {GUEST_NODE} -> {TARGET_NODE} (gnt-instance migrate)",
        tour.last_took if ok else None,
        f"{lost} pings lost at 10 ms, QEMU downtime {downtime} ms" if ok else "",
    )
    tour.run(
        step(
            "gnt-instance",
            "list",
            "-o",
            "name,pnode,status,nic.macs,disk.sizes",
            GUEST,
            title=f"{GUEST} now runs on {tour.guest_node}, with both NICs and both disks",
        )
    )
    return ok


def hot_remove(tour: Tour) -> None:
    hot_change(
        tour,
        "hot-remove NIC",
        step(
            "gnt-instance",
            "modify",
            "-f",
            "--net",
            "1:remove",
            GUEST,
            title=f"Hot-remove the added NIC: the guest, now on {tour.guest_node}, sees it go "
            f"(the report is on {tour.guest_node}'s console log)",
        ),
        dt.devices_without(HOT_MAC),
    )


def fake_tour(tour: Tour) -> None:
    """The cluster core with the fake hypervisor, next to the real VM."""
    tour.run_all(
        [
            step(
                "gnt-instance",
                "add",
                "-n",
                "node1",
                "-H",
                "fake",
                "-t",
                "file",
                "--disk",
                "0:size=1G",
                "--net",
                "0:link=br0",
                "-B",
                "memory=512M,vcpus=2",
                "--tags",
                "role:db",
                "db1",
                title="Two more instances on the fake hypervisor (no VM: for tests at scale)",
            ),
            step("gnt-instance", "add", "-n", "node2", "-H", "fake", "--no-start", "spare1"),
            step(
                "gnt-instance",
                "list",
                title="List instances (Ganeti's default fields), then chosen fields with a filter",
            ),
            step(
                "gnt-instance",
                "list",
                "-o",
                "name,pnode,status,be/maxmem,nic.macs,tags",
                "-F",
                'status == "running"',
            ),
            step(
                "gnt-instance",
                "startup",
                "spare1",
                title="Start, reboot and stop go to each instance's node over RPC",
            ),
            step("gnt-instance", "reboot", "--type", "hard", "db1"),
            step("gnt-instance", "shutdown", "db1"),
            step(
                "gnt-debug",
                "delay",
                "--submit",
                "0.3",
                title="A job submitted in the background, then the job list",
            ),
            step("gnt-job", "list"),
            step(
                "gnt-cluster",
                "verify",
                title="Check the cluster: reachability, versions, config copies, certificates, "
                "clocks",
            ),
            step(
                "gnt-instance",
                "add",
                "-n",
                "node1",
                "--dry-run",
                "web2",
                title="A dry run changes nothing",
            ),
            step(
                "gnt-instance",
                "add",
                "-n",
                "node1",
                "-t",
                "file",
                "--disk",
                "0:size=-1G",
                "web2",
                title="Bad input is refused with a reason and an error code",
                expect_fail=True,
            ),
        ]
    )


def node_roles(tour: Tour) -> None:
    tour.run_all(
        [
            step(
                "gnt-node",
                "modify",
                "--offline",
                "yes",
                "--force",
                "node2",
                title="Mark node2 offline (it stops being a candidate), then back online",
            ),
            step("gnt-node", "list", "-o", "name,role,mfree,pinst_cnt"),
            step("gnt-node", "modify", "--offline", "no", "node2"),
            step("gnt-node", "modify", "--master-candidate", "yes", "node2"),
        ]
    )


def failover(tour: Tour, client_ns: str | None) -> None:
    """The master dies; node2 takes over. Only with ``--failover`` (see the docstring)."""
    vc = tour.vc
    tour.section("The master dies (both its daemons on node1 are killed)")
    bootstrap.stop_masterd(vc.master.paths, sig=signal.SIGKILL)
    noded.stop(vc.master.paths, sig=signal.SIGKILL)
    tour.master = "node2"
    tour.run_all(
        [
            step(
                "gnt-cluster",
                "master-failover",
                title="node2 asks the candidates to vote: 1 of 2 is no majority, so it refuses",
                expect_fail=True,
            ),
            step(
                "gnt-cluster",
                "master-failover",
                "--no-voting",
                "--yes-do-it",
                title="The admin knows node1 is down and overrides the vote",
            ),
            step("gnt-cluster", "getmaster"),
            step("gnt-instance", "list", "-o", "name,pnode,status"),
        ]
    )
    if client_ns is not None:
        ping(tour, client_ns, f"{GUEST} on {tour.guest_node} was not touched: it still answers")
    tour.section("node1 comes back: its node daemon serves, its master daemon refuses to run")
    vcl.start_node_daemon(vc.master, vc=vc)
    print("[node1]$ corral-masterd")
    r = vcl.run_in(vc.master, ["corral-masterd"])
    print((r.stdout + r.stderr).strip())
    if r.returncode == 0:
        tour.fail("the old master started")


def guest_lifecycle(tour: Tour) -> None:
    """Reboot and shut down web1, showing what the guest itself printed."""
    node = tour.vc.node(tour.guest_node)
    off = dt.log_size(node, GUEST)
    with tour.timed(f"soft reboot of {GUEST} (until it reports again)"):
        if tour.run(
            step(
                "gnt-instance",
                "reboot",
                GUEST,
                title=f"A soft reboot: ACPI power button, the guest powers off, {node.name} "
                "starts it again",
                timeout=300,
            )
        ):
            show_console(tour, node, off, dt.devices_with(GUEST_MAC), after=dt.is_boot)
    off = dt.log_size(node, GUEST)
    with tour.timed(f"shutdown of {GUEST}"):
        if tour.run(step("gnt-instance", "shutdown", GUEST, title="Shut it down", timeout=300)):
            show_console(tour, node, off, dt.is_poweroff)
    tour.run(step("gnt-instance", "list", "-o", "name,pnode,status,oper_ram", GUEST))


def show_console(
    tour: Tour,
    node: vcl.VNode,
    offset: int,
    done: Callable[[testguest.ConsoleLine], bool],
    after: Callable[[testguest.ConsoleLine], bool] | None = None,
) -> None:
    seen = dt.wait_report(node, GUEST, done, offset=offset, timeout=BOOT_TIMEOUT, after=after)
    if seen is None:
        tour.fail(f"the guest did not report; console:\n{dt.console_tail(node, GUEST)}")
        return
    print(f"   console of {GUEST}:")
    for rep in seen:
        print(f"   {rep.raw}")


def clean_up(tour: Tour) -> None:
    steps = [step("gnt-instance", "remove", "-f", GUEST, title="Remove the instances")]
    steps += [step("gnt-instance", "remove", "-f", name) for name in ("db1", "spare1")]
    steps.append(step("gnt-job", "list", title="Job history"))
    tour.run_all(steps)


# --- main ----------------------------------------------------------------------------


_MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` of :func:`main` tears down.

    Only in the demo's own process: pyroute2 forks helpers into namespaces and
    ends them with SIGTERM; a fork must die as usual, not run the teardown.
    """
    if os.getpid() != _MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def tour_all(tour: Tour, image: testguest.GuestImage, started: float, failover_too: bool) -> None:
    bring_up(tour, started)
    client_ns = None
    if enable_kvm(tour, image) and add_guest(tour):
        client_ns = vcl.add_guest_ns(tour.vc, tour.vc.node(CLIENT_NODE), 1, CLIENT_IP)
        show_guest(tour, client_ns)
        nic_added = hotplug(tour, client_ns)
        if migrate(tour, client_ns) and nic_added:
            hot_remove(tour)
    with tour.timed("fake-hypervisor instances, jobs, verify (13 commands)"):
        fake_tour(tour)
    with tour.timed("node offline/online, candidate (4 commands)"):
        node_roles(tour)
    if failover_too:
        with tour.timed("master failover to node2 (refused vote, then --no-voting)"):
            failover(tour, client_ns)
    if client_ns is not None:
        guest_lifecycle(tour)
    clean_up(tour)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m corral.demo", description=__doc__.split("\n")[0])
    p.add_argument(
        "--failover",
        action="store_true",
        help="also kill the master and fail over to node2 (with two nodes that needs "
        "--no-voting: one surviving candidate of two is no majority)",
    )
    args = p.parse_args(argv)
    t0 = time.monotonic()
    print("== Corral demo: a 2-node virtual cluster running a real VM (QEMU, TCG) ==")
    old_term = signal.signal(signal.SIGTERM, _interrupt)
    vc: vcl.VCluster | None = None
    tour: Tour | None = None
    failures = 0
    interrupted = False
    try:
        image = build_guest()
        started = time.monotonic()
        vc = vcl.up(2)  # removes what it made if it fails
        tour = Tour(vc)
        try:
            tour_all(tour, image, started, args.failover)
        finally:
            failures += tour.failures
    except KeyboardInterrupt:
        interrupted = True
        print("\n!! interrupted: tearing down")
    except Exception as exc:  # the teardown below must run; the reason is printed
        failures += 1
        print(f"\n!! {type(exc).__name__}: {exc}")
    finally:
        # A second Ctrl-C must not leave namespaces or QEMUs behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if vc is not None:
            down_started = time.monotonic()
            left = _tear_down(vc)
            failures += left
            if tour is not None:
                took = time.monotonic() - down_started
                tour.time("tear down: processes, namespaces, node roots", None if left else took)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, old_term)
    if interrupted:
        return 130
    if tour is not None:
        summary(tour.timings, time.monotonic() - t0)
    print(
        f"\n== demo finished in {time.monotonic() - t0:.1f}s, "
        f"{'all steps as expected' if not failures else f'{failures} unexpected results'};"
        " everything it created is gone =="
    )
    return 1 if failures else 0


def summary(timings: Sequence[Timing], total: float) -> None:
    print("\n# Summary: what each step took")
    rows = [
        [t.step, "FAILED" if t.seconds is None else f"{t.seconds:.2f} s", t.detail] for t in timings
    ]
    rows.append(["whole demo (incl. the guest build check)", f"{total:.1f} s", ""])
    print(dt.table(["step", "time", "detail"], rows))


def _tear_down(vc: vcl.VCluster) -> int:
    """``corral vcluster down``; the number of things it could not remove."""
    report = vcl.down(vc)
    print(
        f"\n# Tear down: stopped {len(report.stopped)} processes, "
        f"removed {len(report.namespaces)} namespaces and the node roots"
    )
    for line in report.leftovers:
        print(f"!! left behind: {line}")
    return len(report.leftovers)


if __name__ == "__main__":
    sys.exit(main())
