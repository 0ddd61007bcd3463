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
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from corral import bootstrap, testguest
from corral import demotools as dt
from corral import vcluster as vcl
from corral.daemons import noded
from corral.demo_tour import CLIENT_IP, CLIENT_NODE, GUEST, Timing, Tour, step
from corral.demo_vm import (
    add_guest,
    build_guest,
    enable_kvm,
    guest_lifecycle,
    hot_remove,
    hotplug,
    migrate,
    ping,
    show_guest,
)

# --- the parts of the tour ------------------------------------------------------------


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
