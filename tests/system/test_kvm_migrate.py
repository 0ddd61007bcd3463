"""Live migration and failover of real QEMU instances between two vcluster nodes.

Proven the way an admin sees it: pings from a third namespace keep being
answered across the move, the instance's devices (hot-added ones too) keep
their ids and slots (a hot-remove after the move is seen by the guest), the
node left behind has no QEMU, tap, route or runtime file, and failures leave
the instance running where it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from corral import testguest
from corral import vcluster as vcl
from corral.demotools import log_size
from tests.system.kvmtools import (
    devices_lines,
    gnt,
    instance_files,
    kvm_vcluster,
    ping,
    qemu_pids,
    reachable_after_migration,
    restart_masterd,
    routes,
    rules,
    taps,
    wait_devices,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and taps")

MAC_0 = "aa:00:00:6b:00:01"
MAC_1 = "aa:00:00:6b:00:02"
ADDR_0 = "203.0.113.81"
ADDR_1 = "203.0.113.82"


@pytest.fixture(scope="module")
def vc(
    tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage
) -> Iterator[vcl.VCluster]:
    with kvm_vcluster(2, tmp_path_factory.mktemp("mig") / "vc", guest) as c:
        yield c


def runtime_devices(node: vcl.VNode, name: str) -> dict[str, str]:
    data = json.loads((node.paths.hv_run_dir("kvm") / "conf" / f"{name}.runtime").read_text())
    return {n["hvinfo"]["id"]: n["hvinfo"]["addr"] for n in data[1]}


def pnode(vc: vcl.VCluster, name: str) -> str:
    return gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "pnode", name).stdout.strip()


def status(vc: vcl.VCluster, name: str) -> str:
    return gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "status", name).stdout.strip()


class Pinger:
    """``ping -i 0.01`` from a namespace; lost = sent - received."""

    def __init__(self, ns: str, address: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-n", "-i", "0.01", "-W", "1", address],
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> tuple[int, int]:
        self.proc.send_signal(signal.SIGINT)
        out = self.proc.communicate(timeout=10)[0]
        line = next(x for x in out.splitlines() if "packets transmitted" in x)
        sent, received = (int(w.split()[0]) for w in line.split(",")[:2])
        return sent, received


def test_live_migration_keeps_devices_and_network(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    kargs = f"quiet corral.ip.{MAC_0.replace(':', '')}={ADDR_0}/24"
    kargs += f" corral.ip.{MAC_1.replace(':', '')}={ADDR_1}/24"
    res = gnt(
        vc,
        "gnt-instance",
        "add",
        "-t",
        "diskless",
        "-B",
        "memory=128M",
        "-n",
        n1.name,
        "-o",
        "noop",
        "--net",
        f"0:mac={MAC_0},link=br0",
        "-H",
        f"kvm:kernel_args={kargs},migration_bandwidth=1000,migration_downtime=50",
        "m1",
        check=False,
    )
    assert res.returncode == 0, res.stderr
    wait_devices(n1, "m1", macs=(MAC_0,))
    off = log_size(n1, "m1")
    gnt(vc, "gnt-instance", "modify", "--net", f"add:mac={MAC_1},link=br0", "m1")
    wait_devices(n1, "m1", offset=off, macs=(MAC_0, MAC_1))
    before = runtime_devices(n1, "m1")
    client = vcl.add_guest_ns(vc, n2, 1, "203.0.113.203")
    assert ping(client, ADDR_0) and ping(client, ADDR_1)

    pinger = Pinger(client, ADDR_0)
    time.sleep(0.5)
    res = gnt(vc, "gnt-instance", "migrate", "-f", "m1")
    time.sleep(0.5)
    sent, received = pinger.stop()
    assert "Migration completed" in res.stdout + res.stderr, res.stdout
    assert sent - received <= 20, f"{sent - received} of {sent} pings lost"
    assert pnode(vc, "m1") == n2.name and status(vc, "m1") == "running"
    # Nothing of it is left on node1.
    assert qemu_pids(n1) == [] and taps(n1.ns) == [] and instance_files(n1, "m1") == []
    # Same devices, same ids and slots (hot-added NIC included); both still answer.
    assert runtime_devices(n2, "m1") == before
    assert ping(client, ADDR_1)
    assert "Pending changes" not in gnt(vc, "gnt-instance", "info", "m1").stdout

    # The target's QEMU is really that machine: a hot-remove there reaches the guest.
    off = log_size(n2, "m1")
    gnt(vc, "gnt-instance", "modify", "-f", "--net", "1:remove", "m1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(d.macs == {MAC_0} for d in devices_lines(n2, "m1", off)):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the guest on node2 never reported the NIC gone")


def test_target_dying_mid_migration_leaves_the_instance_on_the_source(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    # Slow enough to be caught in the middle (128 MiB at 4 MiB/s).
    gnt(vc, "gnt-instance", "modify", "-H", "migration_bandwidth=4", "m1")
    job = gnt(vc, "gnt-instance", "migrate", "-f", "--submit", "m1").stdout.split()[-1]
    deadline = time.monotonic() + 30
    while not qemu_pids(n1) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the transfer is under way
    for pid in qemu_pids(n1):
        os.kill(pid, signal.SIGKILL)
    res = gnt(vc, "gnt-job", "watch", job, check=False)
    out = gnt(vc, "gnt-job", "info", job).stdout
    assert res.returncode != 0 or "error" in out
    assert "keeps running on node2" in out, out
    assert pnode(vc, "m1") == n2.name and status(vc, "m1") == "running"
    time.sleep(0.5)
    assert qemu_pids(n1) == [] and taps(n1.ns) == [] and instance_files(n1, "m1") == []
    gnt(vc, "gnt-instance", "modify", "-H", "migration_bandwidth=1000", "m1")
    reachable_after_migration(vc, vcl_client(vc), ADDR_0, n2, "m1")


def vcl_client(vc: vcl.VCluster) -> str:
    return f"{vc.prefix}g1"


def test_source_dying_then_failover(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    for pid in qemu_pids(n2):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while status(vc, "m1") != "ERROR_down" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(vc, "m1") == "ERROR_down"
    refused = gnt(vc, "gnt-instance", "migrate", "-f", "m1", check=False)
    assert refused.returncode != 0 and "not running" in refused.stdout + refused.stderr
    off = log_size(n1, "m1") if (n1.paths.log_dir / "kvm" / "m1.console.log").exists() else 0
    gnt(vc, "gnt-instance", "failover", "-f", "m1")
    assert pnode(vc, "m1") == n1.name
    wait_devices(n1, "m1", offset=off, macs=(MAC_0,))
    assert ping(vcl_client(vc), ADDR_0)
    # node2 was cleaned when the instance started elsewhere or by the next start there.
    assert taps(n2.ns) == []


def test_routed_nic_routes_follow_the_instance(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    addr = "198.51.100.84"
    gnt(vc, "gnt-instance", "modify", "--net", f"add:mode=routed,link=100,ip={addr}", "m1")
    assert addr in routes(n1.ns, "100")
    gnt(vc, "gnt-instance", "migrate", "-f", "m1")
    assert addr in routes(n2.ns, "100"), "the target did not wire the routed NIC"
    assert addr not in routes(n1.ns, "100"), "the source did not withdraw its route"
    assert not any(r.startswith("tap") for r in rules(n1.ns))


def test_sharedfile_instance_with_a_hot_added_disk_migrates(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    res = gnt(
        vc,
        "gnt-instance",
        "add",
        "-t",
        "sharedfile",
        "--disk",
        "0:size=16M",
        "-B",
        "memory=128M",
        "-n",
        n1.name,
        "-o",
        "noop",
        "--no-nics",
        "-H",
        "kvm:migration_bandwidth=1000,migration_downtime=50",
        "m2",
        check=False,
    )
    assert res.returncode == 0, res.stderr
    wait_devices(n1, "m2")
    off = log_size(n1, "m2")
    gnt(vc, "gnt-instance", "modify", "--disk", "add:size=8M", "m2")
    deadline = time.monotonic() + 30
    while not any(len(d.blk) == 2 for d in devices_lines(n1, "m2", off)):
        assert time.monotonic() < deadline, "the hot-added disk never showed up"
        time.sleep(0.1)
    gnt(vc, "gnt-instance", "migrate", "-f", "-n", n2.name, "m2")
    assert pnode(vc, "m2") == n2.name and status(vc, "m2") == "running"
    # Both disks are the same shared images, plugged at the same slots on node2:
    off = log_size(n2, "m2")
    gnt(vc, "gnt-instance", "modify", "-f", "--disk", "1:remove", "m2")
    deadline = time.monotonic() + 30
    while not any(len(d.blk) == 1 for d in devices_lines(n2, "m2", off)):
        assert time.monotonic() < deadline, "the guest on node2 never reported the disk gone"
        time.sleep(0.1)
    gnt(vc, "gnt-instance", "remove", "-f", "m2")


def test_node_migrate_and_evacuate_move_every_primary_instance(vc: vcl.VCluster) -> None:
    src = next(n for n in vc.nodes if n.name == pnode(vc, "m1"))
    dst = next(n for n in vc.nodes if n is not src)
    res = gnt(vc, "gnt-node", "migrate", "-f", src.name)
    assert "Migration completed" in res.stdout + res.stderr, res.stdout
    assert pnode(vc, "m1") == dst.name and status(vc, "m1") == "running"
    assert qemu_pids(src) == [] and taps(src.ns) == []
    gnt(vc, "gnt-node", "evacuate", "-f", "--primary-only", dst.name)
    assert pnode(vc, "m1") == src.name and status(vc, "m1") == "running"
    reachable_after_migration(vc, vcl_client(vc), ADDR_0, src, "m1")


def test_cleanup_settles_a_migration_the_master_did_not_see_end(vc: vcl.VCluster) -> None:
    """The master dies while QEMU migrates; QEMU finishes; ``--cleanup`` records it."""
    src_node = next(n for n in vc.nodes if n.name == pnode(vc, "m1"))
    dst_node = next(n for n in vc.nodes if n is not src_node)
    gnt(vc, "gnt-instance", "modify", "-H", "migration_bandwidth=16", "m1")
    job = gnt(vc, "gnt-instance", "migrate", "-f", "--submit", "m1").stdout.split()[-1]
    deadline = time.monotonic() + 30
    while "memory transfer progress" not in gnt(vc, "gnt-job", "info", job).stdout:
        assert time.monotonic() < deadline, "the migration never started"
        time.sleep(0.1)
    restart_masterd(vc)  # the job's LU is gone; the node daemons and QEMUs go on
    out = gnt(vc, "gnt-job", "info", job).stdout
    assert "error" in out
    # QEMU completes the transfer by itself: the target runs, the source pauses
    # (the source node reports it no longer running).
    deadline = time.monotonic() + 120
    while "actual state is paused" not in gnt(vc, "gnt-instance", "info", "m1").stdout:
        assert time.monotonic() < deadline, "the migration never completed on its own"
        time.sleep(0.2)
    assert pnode(vc, "m1") == src_node.name  # the config never heard of the move
    res = gnt(vc, "gnt-instance", "migrate", "-f", "--cleanup", "m1")
    assert dst_node.name in res.stdout + res.stderr
    assert pnode(vc, "m1") == dst_node.name and status(vc, "m1") == "running"
    assert qemu_pids(src_node) == [] and taps(src_node.ns) == []
    gnt(vc, "gnt-instance", "modify", "-H", "migration_bandwidth=1000", "m1")
    reachable_after_migration(vc, vcl_client(vc), ADDR_0, dst_node, "m1")
