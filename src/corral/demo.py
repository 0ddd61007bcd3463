"""``make demo``: a narrated tour of a one-node cluster in a temporary root.

Runs the real ``gnt-*`` commands against a real ``corral-masterd`` (fake
hypervisor), printing each command and its output, then tears everything
down — also when a step fails.
"""

from __future__ import annotations

import shlex
import sys
import time

from corral.testing.cluster import TempCluster

STEPS: list[tuple[str | None, list[str]]] = [
    ("Cluster information", ["gnt-cluster", "info"]),
    (
        "Create a web server with a 1 GiB file disk and a bridged NIC",
        [
            "gnt-instance",
            "add",
            "-t",
            "file",
            "--disk",
            "0:size=1G",
            "--net",
            "0:mode=bridged,link=br0",
            "-B",
            "memory=512M,vcpus=2",
            "web1",
        ],
    ),
    (
        "Create two more; one stays down",
        ["gnt-instance", "add", "-B", "memory=256M", "--tags", "role:db", "db1"],
    ),
    (None, ["gnt-instance", "add", "--no-start", "spare1"]),
    ("List the instances (Ganeti's default fields)", ["gnt-instance", "list"]),
    (
        "List with chosen fields and a filter",
        [
            "gnt-instance",
            "list",
            "-o",
            "name,status,be/maxmem,nic.macs,disk.sizes,tags",
            "-F",
            'status == "running"',
        ],
    ),
    ("Live node data", ["gnt-node", "list"]),
    ("Start, reboot and stop", ["gnt-instance", "startup", "spare1"]),
    (None, ["gnt-instance", "reboot", "--type", "hard", "web1"]),
    (None, ["gnt-instance", "shutdown", "db1"]),
    ("A job submitted in the background, then watched", ["gnt-debug", "delay", "--submit", "0.3"]),
    (None, ["gnt-job", "list"]),
    ("Check the cluster", ["gnt-cluster", "verify"]),
    ("A dry run changes nothing", ["gnt-instance", "add", "--dry-run", "web2"]),
    (
        "Bad input is refused with a reason and an error code",
        ["gnt-instance", "add", "--disk", "0:size=-1G", "-t", "file", "web2"],
    ),
    ("Remove everything", ["gnt-instance", "remove", "-f", "web1"]),
    (None, ["gnt-instance", "remove", "-f", "db1"]),
    (None, ["gnt-instance", "remove", "-f", "spare1"]),
    (None, ["gnt-instance", "list"]),
    ("Job history", ["gnt-job", "list"]),
    ("Destroy the cluster", ["gnt-cluster", "destroy", "--yes-do-it"]),
]


def main() -> int:
    t0 = time.monotonic()
    print("== Corral demo: a one-node cluster with the fake hypervisor ==")
    cluster = TempCluster(prefix="corral-demo-", init=False)
    failures = 0
    try:
        print(f"\n# Initialise a cluster under {cluster.root}")
        print("$ gnt-cluster init --node-name node1 demo-cluster")
        r = cluster.run("gnt-cluster", "init", "--node-name", "node1", "demo-cluster", check=True)
        print(r.stdout, end="")
        for title, argv in STEPS:
            if title:
                print(f"\n# {title}")
            print("$ " + " ".join(shlex.quote(a) for a in argv))
            started = time.monotonic()
            r = cluster.run(*argv)
            took = time.monotonic() - started
            print(r.stdout, end="")
            print(r.stderr, end="", file=sys.stdout)
            expected_fail = argv[:2] == ["gnt-instance", "add"] and "0:size=-1G" in argv
            if (r.returncode != 0) != expected_fail:
                failures += 1
                print(f"!! unexpected exit status {r.returncode}")
            else:
                print(f"   (exit {r.returncode}, {took * 1000:.0f} ms)")
    finally:
        cluster.close()
    print(
        f"\n== demo finished in {time.monotonic() - t0:.1f}s, "
        f"{'all steps as expected' if not failures else f'{failures} unexpected results'};"
        " everything it created is gone =="
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
