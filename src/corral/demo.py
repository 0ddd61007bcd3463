"""``make demo``: a narrated tour of a 3-node virtual cluster.

Builds three nodes as network namespaces on this host (``corral vcluster``),
each with its own root and ``corral-noded``; node1 runs ``corral-masterd``
and enrols the others over mutual TLS. Then it runs the real ``gnt-*``
commands (fake hypervisor), printing each with its output, fails the master
over to node2, and tears everything down — also when a step fails.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time

from corral import bootstrap
from corral import vcluster as vcl
from corral.daemons import noded

Step = tuple[str | None, list[str], str]  # title, argv, on which node ("master" or a name)

STEPS: list[Step] = [
    (
        "The nodes: node1 is the master, the others enrolled master candidates",
        ["gnt-node", "list", "-o", "name,role,pip,mtotal,mfree,ctotal"],
        "master",
    ),
    ("Cluster information", ["gnt-cluster", "info"], "master"),
    (
        "Create an instance on each node: a 1 GiB file disk, a NIC on the VM bridge br0",
        [
            "gnt-instance",
            "add",
            "-n",
            "node1",
            "-t",
            "file",
            "--disk",
            "0:size=1G",
            "--net",
            "0:link=br0",
            "-B",
            "memory=512M,vcpus=2",
            "web1",
        ],
        "master",
    ),
    (
        None,
        ["gnt-instance", "add", "-n", "node2", "-B", "memory=256M", "--tags", "role:db", "db1"],
        "master",
    ),
    (None, ["gnt-instance", "add", "-n", "node3", "--no-start", "spare1"], "master"),
    (
        "List instances (Ganeti's default fields), then chosen fields with a filter",
        ["gnt-instance", "list"],
        "master",
    ),
    (
        None,
        [
            "gnt-instance",
            "list",
            "-o",
            "name,pnode,status,be/maxmem,nic.macs,tags",
            "-F",
            'status == "running"',
        ],
        "master",
    ),
    (
        "Start, reboot and stop go to each instance's node over RPC",
        ["gnt-instance", "startup", "spare1"],
        "master",
    ),
    (None, ["gnt-instance", "reboot", "--type", "hard", "web1"], "master"),
    (None, ["gnt-instance", "shutdown", "db1"], "master"),
    (
        "A job submitted in the background, then the job list",
        ["gnt-debug", "delay", "--submit", "0.3"],
        "master",
    ),
    (None, ["gnt-job", "list"], "master"),
    (
        "Check the cluster: reachability, versions, config copies, certificates, clocks",
        ["gnt-cluster", "verify"],
        "master",
    ),
    (
        "A dry run changes nothing",
        ["gnt-instance", "add", "-n", "node2", "--dry-run", "web2"],
        "master",
    ),
    (
        "Bad input is refused with a reason and an error code",
        ["gnt-instance", "add", "-n", "node2", "-t", "file", "--disk", "0:size=-1G", "web2"],
        "master",
    ),
    (
        "Mark node3 offline, then back online",
        ["gnt-node", "modify", "--offline", "yes", "--force", "node3"],
        "master",
    ),
    (None, ["gnt-node", "list", "-o", "name,role,mfree,pinst_cnt"], "master"),
    (None, ["gnt-node", "modify", "--offline", "no", "node3"], "master"),
    (None, ["gnt-node", "modify", "--master-candidate", "yes", "node3"], "master"),
]

FAILOVER: list[Step] = [
    (
        "node2 takes over (the candidates vote), the instances are untouched",
        ["gnt-cluster", "master-failover"],
        "node2",
    ),
    (None, ["gnt-cluster", "getmaster"], "node2"),
    (None, ["gnt-instance", "list", "-o", "name,pnode,status"], "node2"),
]

EXPECTED_FAILURE = "0:size=-1G"


def _run(vc: vcl.VCluster, step: Step, master: str) -> bool:
    title, argv, where = step
    node = vc.node(master if where == "master" else where)
    if title:
        print(f"\n# {title}")
    print(f"[{node.name}]$ " + " ".join(shlex.quote(a) for a in argv))
    started = time.monotonic()
    r = vcl.run_in(node, argv, timeout=120)
    took = time.monotonic() - started
    print(r.stdout, end="")
    print(r.stderr, end="")
    if (r.returncode != 0) != (EXPECTED_FAILURE in argv):
        print(f"!! unexpected exit status {r.returncode}")
        return False
    print(f"   (exit {r.returncode}, {took * 1000:.0f} ms)")
    return True


def main() -> int:
    t0 = time.monotonic()
    print("== Corral demo: a 3-node virtual cluster (fake hypervisor) ==")
    failures = 0
    vc = vcl.up(3)
    try:
        print(f"\n# Build 3 nodes as network namespaces (prefix {vc.prefix}):")
        for n in vc.nodes:
            print(
                f"   {n.name}: namespace {n.ns}, {n.mgmt_ip} on the management switch, "
                f"bridge br0 on the VM network, root {n.root}"
            )
        print("# gnt-cluster init on node1, then gnt-node add --join for node2 and node3")
        started = time.monotonic()
        vcl.init_cluster(vc, cluster_name="demo")
        print(f"   (cluster up in {time.monotonic() - started:.1f}s)")
        failures += sum(not _run(vc, s, "node1") for s in STEPS)
        print("\n# The master dies (both its daemons are killed)")
        bootstrap.stop_masterd(vc.master.paths, sig=signal.SIGKILL)
        noded.stop(vc.master.paths, sig=signal.SIGKILL)
        failures += sum(not _run(vc, s, "node2") for s in FAILOVER)
        print("\n# node1 comes back: its node daemon serves, its master daemon refuses to run")
        vcl.start_node_daemon(vc.master, vc=vc)
        r = vcl.run_in(vc.master, ["corral-masterd"])
        print("[node1]$ corral-masterd")
        print((r.stdout + r.stderr).strip())
        if r.returncode == 0:
            failures += 1
            print("!! the old master started")
        for name in ("web1", "db1", "spare1"):
            failures += not _run(
                vc, (None, ["gnt-instance", "remove", "-f", name], "node2"), "node2"
            )
        failures += not _run(vc, ("Job history", ["gnt-job", "list"], "node2"), "node2")
    finally:
        report = vcl.down(vc)
        print(
            f"\n# Tear down: stopped {len(report.stopped)} processes, removed "
            f"{len(report.namespaces)} namespaces"
        )
    print(
        f"\n== demo finished in {time.monotonic() - t0:.1f}s, "
        f"{'all steps as expected' if not failures else f'{failures} unexpected results'};"
        " everything it created is gone =="
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
