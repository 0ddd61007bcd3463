"""Instances on an OVN logical switch, across two real OVN chassis (vcluster).

What an admin observes: a guest on node2 reaches a guest on node1 through
the geneve overlay; hot-added NICs get a logical port and answer, removed
ones lose it; a live migration moves the binding exactly once (the SB
``Port_Binding.chassis`` goes node1 → node2, never back and forth) and the
port ends bound to the destination alone; a failed migration and a master
killed mid-migration leave the port on one correct chassis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from corral import testguest
from corral import vcluster as vcl
from corral.network.ovn_nb import NbClient, PortState
from corral.network.ovn_sb import BindingState, BindingWatcher, port_binding
from corral.vcluster import ovn as vovn
from tests.system.kvmtools import (
    gnt,
    kvm_vcluster,
    ping,
    qemu_pids,
    qemu_pids_under,
    reachable_after_migration,
    restart_masterd,
    wait_console_text,
    wait_devices,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and taps")

NET = "ovnnet"
MAC_A = "aa:00:00:7c:00:01"
MAC_B = "aa:00:00:7c:00:02"
MAC_HOT = "aa:00:00:7c:00:03"
CLIENT_MAC = "aa:00:00:7c:00:fe"
CLIENT_PORT = "0c11e47f-0000-4000-8000-00000000c1e7"  # made by hand, not by Corral
IP_A, IP_B, IP_HOT, IP_CLIENT = "203.0.113.11", "203.0.113.12", "203.0.113.21", "203.0.113.99"


def kargs(*pairs: tuple[str, str], extra: str = "") -> str:
    words = ["quiet", *(f"corral.ip.{m.replace(':', '')}={ip}/24" for m, ip in pairs)]
    return " ".join(words + ([extra] if extra else []))


class Ovn:
    """The cluster plus its NB (over the master's unix socket) and a client port."""

    def __init__(self, vc: vcl.VCluster) -> None:
        self.vc = vc
        self.central = vovn.central(vc)
        self.nb = NbClient(self.central.nb_unix)
        self.client_ns = ""

    def port(self, nic_uuid: str) -> PortState | None:
        return self.nb.get_port(nic_uuid)

    def nic_uuid(self, inst: str, index: int = 0) -> str:
        out = gnt(self.vc, "gnt-instance", "list", "--no-headers", "-o", "nic.uuids", inst).stdout
        return out.strip().split(",")[index]


@pytest.fixture(scope="module")
def ovn(tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage) -> Iterator[Ovn]:
    with kvm_vcluster(2, tmp_path_factory.mktemp("ovn") / "vc", guest, ovn=True) as c:
        gnt(c, "gnt-network", "add", "--network=203.0.113.0/24", "--ovn", NET)
        gnt(c, "gnt-network", "connect", NET, "default")
        o = Ovn(c)
        # A workload on the switch without QEMU, on node1: the "outside" pinger.
        nbctl = ["ovn-nbctl", f"--db={o.central.nb_unix}"]
        subprocess.run(
            [
                *nbctl,
                "lsp-add",
                NET,
                CLIENT_PORT,
                "--",
                "lsp-set-addresses",
                CLIENT_PORT,
                f"{CLIENT_MAC} {IP_CLIENT}",
            ],
            check=True,
        )
        o.client_ns = vovn.add_port_ns(c, c.nodes[0], CLIENT_PORT, CLIENT_MAC, f"{IP_CLIENT}/24")
        yield o


def add(o: Ovn, name: str, node: vcl.VNode, mac: str, ip: str, kernel: str) -> None:
    res = gnt(
        o.vc,
        "gnt-instance",
        "add",
        "-t",
        "diskless",
        "-B",
        "memory=128M",
        "-n",
        node.name,
        "-o",
        "noop",
        "--net",
        f"0:network={NET},mac={mac},ip={ip}",
        "-H",
        f"kvm:kernel_args={kernel},migration_bandwidth=1000,migration_downtime=50",
        name,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_instances_on_different_nodes_reach_each_other(ovn: Ovn) -> None:
    n1, n2 = ovn.vc.nodes
    add(ovn, "va", n1, MAC_A, IP_A, kargs((MAC_A, IP_A), (MAC_HOT, IP_HOT)))
    # vb pings va from node2 through the overlay and says so on its console.
    add(ovn, "vb", n2, MAC_B, IP_B, kargs((MAC_B, IP_B), extra=f"corral.ping={IP_A}"))
    wait_console_text(n2, "vb", f"PING {IP_A} ok")
    port = ovn.port(ovn.nic_uuid("va"))
    assert port is not None and port.switch == NET
    assert port.addresses == (f"{MAC_A} {IP_A}",)
    assert port.requested_chassis == (n1.name,) and port.instance == "va"
    assert _binding(ovn.central.sb_unix, ovn.nic_uuid("vb")).names == (n2.name,)
    assert ping(ovn.client_ns, IP_B)  # node1 -> node2 across the tunnel


def test_hot_added_nic_gets_a_port_and_answers(ovn: Ovn) -> None:
    n1, _ = ovn.vc.nodes
    gnt(
        ovn.vc,
        "gnt-instance",
        "modify",
        "--net",
        f"add:network={NET},mac={MAC_HOT},ip={IP_HOT}",
        "va",
    )
    wait_devices(n1, "va", macs=(MAC_A, MAC_HOT))
    uuid = ovn.nic_uuid("va", 1)
    port = ovn.port(uuid)
    assert port is not None and port.addresses == (f"{MAC_HOT} {IP_HOT}",)
    assert ping(ovn.client_ns, IP_HOT)
    gnt(ovn.vc, "gnt-instance", "modify", "-f", "--net", "1:remove", "va")
    assert ovn.port(uuid) is None
    assert not ping(ovn.client_ns, IP_HOT, count=2, timeout=3)


def test_live_migration_moves_the_binding_once(ovn: Ovn) -> None:
    n1, n2 = ovn.vc.nodes
    uuid = ovn.nic_uuid("va")
    with BindingWatcher(ovn.central.sb_unix, uuid) as w:
        out = gnt(ovn.vc, "gnt-instance", "migrate", "-f", "va").stdout
        w.wait_for(
            lambda s: s is not None and s.chassis == n2.name and not s.additional_chassis, 30
        )
        path = w.chassis_path()
    assert "activation on RARP" in out
    # No fight: node1, then node2, and nothing in between or after.
    assert [c for c in path if c] == [n1.name, n2.name], path
    port = ovn.port(uuid)
    assert port is not None and port.requested_chassis == (n2.name,)
    assert not port.activation_strategy
    assert ping(ovn.client_ns, IP_A)
    # The source's br-int no longer has the instance's tap; the target's has.
    assert _ports_with_iface_id(n1, uuid) == []
    assert len(_ports_with_iface_id(n2, uuid)) == 1


def test_failed_migration_reverts_the_port(ovn: Ovn) -> None:
    n1, n2 = ovn.vc.nodes  # va runs on node2 now
    uuid = ovn.nic_uuid("va")
    gnt(ovn.vc, "gnt-instance", "modify", "-H", "migration_bandwidth=4", "va")
    try:
        job = gnt(ovn.vc, "gnt-instance", "migrate", "-f", "--submit", "va").stdout.split()[-1]
        _wait_port(ovn, uuid, lambda p: p.migrating)
        deadline = time.monotonic() + 30
        while not qemu_pids(n1) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        for pid in qemu_pids(n1):  # the target dies mid-copy
            os.kill(pid, signal.SIGKILL)
        gnt(ovn.vc, "gnt-job", "watch", job, check=False)
    finally:
        gnt(ovn.vc, "gnt-instance", "modify", "-H", "migration_bandwidth=1000", "va")
    port = ovn.port(uuid)
    assert port is not None and port.requested_chassis == (n2.name,)
    assert not port.activation_strategy
    assert _binding(ovn.central.sb_unix, uuid).names == (n2.name,)
    assert ping(ovn.client_ns, IP_A)
    assert _ports_with_iface_id(n1, uuid) == []  # kvm-ifdown migrate-failed on the target


def _ports_with_iface_id(node: vcl.VNode, uuid: str) -> list[str]:
    with vovn.node_ovsdb(node) as api:
        rows = api.db_find("Interface").execute(check_error=True)
    return [r["name"] for r in rows if r["external_ids"].get("iface-id") == uuid]


def test_master_killed_mid_migration_is_settled_by_watcher_and_cleanup(ovn: Ovn) -> None:
    n1, n2 = ovn.vc.nodes  # va on node2
    uuid = ovn.nic_uuid("va")
    sb = ovn.central.sb_unix
    gnt(ovn.vc, "gnt-instance", "modify", "-H", "migration_bandwidth=16", "va")
    try:
        gnt(ovn.vc, "gnt-instance", "migrate", "-f", "--submit", "va")
        _wait_port(ovn, uuid, lambda p: p.migrating)  # the workflow's first step is done
        deadline = time.monotonic() + 30
        while not qemu_pids(n1):  # the target is up: the copy starts right after
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        restart_masterd(ovn.vc)  # killed between the steps, mid-copy
        # QEMU finishes the copy by itself: the guest resumes on node1 and its
        # RARP activates the port there; nobody narrows the binding.
        deadline = time.monotonic() + 60
        while not _activated(sb, uuid, n1.name):
            assert time.monotonic() < deadline, port_binding(sb, uuid)
            time.sleep(0.1)
        still = ovn.port(uuid)
        assert still is not None and still.migrating
        verify = gnt(ovn.vc, "gnt-cluster", "verify", check=False).stdout
        assert f"OVN port {uuid} is requested on node2,node1" in verify, verify
        # The watcher's OVN pass binds the port where the guest runs, alone.
        res = vcl.run_in(ovn.vc.master, ["corral-watcher", "--job-age=0"], timeout=300)
        assert "OVN port" in res.stdout, res.stdout + res.stderr
        port = ovn.port(uuid)
        assert port is not None and port.requested_chassis == (n1.name,), port
        assert not port.activation_strategy
        # And --cleanup records the move in the config and stops the old copy.
        cleanup = gnt(ovn.vc, "gnt-instance", "migrate", "--cleanup", "-f", "va").stdout
        assert "bound to node1 alone" in cleanup
    finally:
        gnt(ovn.vc, "gnt-instance", "modify", "-H", "migration_bandwidth=1000", "va")
    where = gnt(ovn.vc, "gnt-instance", "list", "--no-headers", "-o", "pnode", "va").stdout.strip()
    assert where == n1.name
    port = ovn.port(uuid)
    assert port is not None and port.requested_chassis == (n1.name,)
    binding = port_binding(sb, uuid)
    assert binding is not None and binding.chassis == n1.name and not binding.additional_chassis
    assert qemu_pids_under(n2.root, "va") == set()  # the old copy is gone
    reachable_after_migration(ovn.vc, ovn.client_ns, IP_A, n1, "va")


def _activated(sb: str, uuid: str, chassis: str) -> bool:
    b = port_binding(sb, uuid)
    return b is not None and chassis in b.activated


def test_removing_instances_deletes_their_ports(ovn: Ovn) -> None:
    uuids = [ovn.nic_uuid("va"), ovn.nic_uuid("vb")]
    for name in ("va", "vb"):
        gnt(ovn.vc, "gnt-instance", "remove", "-f", name)
    assert [ovn.port(u) for u in uuids] == [None, None]
    assert ovn.port(CLIENT_PORT) is not None  # not Corral's: left alone


def _wait_port(ovn: Ovn, uuid: str, pred: object, timeout: float = 30) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = ovn.port(uuid)
        if p is not None and pred(p):
            return
        time.sleep(0.05)
    raise AssertionError(f"port {uuid} never reached the state: {ovn.port(uuid)}")


def _binding(sb: str, lsp: str) -> BindingState:
    b = port_binding(sb, lsp)
    assert b is not None, f"no SB port binding for {lsp}"
    return b
