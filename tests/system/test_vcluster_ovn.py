"""OVN in a 2-node virtual cluster: each node a chassis, traffic over geneve.

What an admin would check: both nodes registered as chassis in the southbound
database, a workload on each node of one logical switch reaching the other
through the tunnel, each logical port bound to the chassis of the node it is
on, and nothing of it left after ``down``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl as nb_impl

from corral.network.ovn_sb import BindingState, port_binding
from corral.vcluster import cluster as vcl
from corral.vcluster import net, ovn
from corral.vcluster.proc import is_ours
from tests.system.kvmtools import ping

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("ovs-vswitchd", "ovn-northd", "ovn-controller")),
        reason="needs openvswitch-switch, ovn-central and ovn-host",
    ),
]

MAC_A = "0a:00:00:07:00:0a"
MAC_B = "0a:00:00:07:00:0b"
IP_A = "203.0.113.10"
IP_B = "203.0.113.11"


class _NbApi(nb_impl.OvnNbApiIdlImpl):  # type: ignore[misc]
    """ovsdbapp keeps a backend's connection on the class; keep this one's on
    the instance so no other NB API in the same process inherits it."""

    @property
    def ovsdb_connection(self) -> Any:
        return self._conn

    @ovsdb_connection.setter
    def ovsdb_connection(self, conn: Any) -> None:
        self._conn = conn


@contextmanager
def nb_api(central: ovn.OvnCentral) -> Iterator[Any]:
    # The host namespace has no route to node1's TCP remote; the unix socket
    # is the same database.
    conn = connection.Connection(
        connection.OvsdbIdl.from_server(central.nb_unix, "OVN_Northbound"), timeout=10
    )
    try:
        yield _NbApi(conn)
    finally:
        conn.stop(timeout=5)


def wait_binding(central: ovn.OvnCentral, lsp: str, timeout: float = 30) -> BindingState:
    """The port's SB binding once ovn-controller has claimed it and set it up."""
    deadline = time.monotonic() + timeout
    pb = None
    while time.monotonic() < deadline:
        pb = port_binding(central.sb_unix, lsp)
        if pb is not None and pb.chassis and pb.up:
            return pb
        time.sleep(0.05)
    raise AssertionError(f"{lsp} not bound and up in {timeout}s: {pb}")


def first_reply(ns: str, address: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        argv = ["ping", "-n", "-c", "1", "-W", "0.2", address]
        if net.run_in_ns(ns, argv, capture_output=True).returncode == 0:
            return True
    return False


def host_links() -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return [link["ifname"] for link in json.loads(out.stdout or "[]")]


def test_two_chassis_ping_over_geneve(tmp_path: Path) -> None:
    t0 = time.monotonic()
    vc = vcl.up(2, base=tmp_path / "vc", ovn=True)
    try:
        t_chassis = time.monotonic() - t0
        central = ovn.central(vc)
        assert central.nb_remote == "tcp:198.51.100.11:6641"
        assert ovn.sb_chassis(central) == ["node1", "node2"]
        node1, node2 = vc.nodes
        # the underlay: tunnel IPs on br-phy, which holds tun0
        assert "203.0.113.201/24" in net.addresses(node1.ns)["br-phy"]
        assert "203.0.113.202/24" in net.addresses(node2.ns)["br-phy"]

        with nb_api(central) as nb:
            nb.ls_add("ls0").execute(check_error=True)
            with nb.transaction(check_error=True) as txn:
                txn.add(nb.lsp_add("ls0", "lsp-a", addresses=[f"{MAC_A} {IP_A}"]))
                txn.add(nb.lsp_add("ls0", "lsp-b", addresses=[f"{MAC_B} {IP_B}"]))
        ns_a = ovn.add_port_ns(vc, node1, "lsp-a", MAC_A, f"{IP_A}/24")
        ns_b = ovn.add_port_ns(vc, node2, "lsp-b", MAC_B, f"{IP_B}/24")

        pa, pb = wait_binding(central, "lsp-a"), wait_binding(central, "lsp-b")
        assert (pa.chassis, pa.additional_chassis) == ("node1", ())
        assert (pb.chassis, pb.additional_chassis) == ("node2", ())

        # Retried: the first tunnelled packet may be dropped while ovs-vswitchd
        # resolves the remote tunnel endpoint (up() warms that cache).
        assert first_reply(ns_a, IP_B), "no ping from node1's port to node2's over geneve"
        t_ping = time.monotonic() - t0
        assert ping(ns_a, IP_B, timeout=10)
        assert ping(ns_b, IP_A, timeout=10)
        # a full 1500-byte packet, not fragmented, fits the underlay with its
        # geneve header (what TCP between instances needs)
        full = ["ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", IP_B]
        assert net.run_in_ns(ns_a, full, capture_output=True).returncode == 0
        print(f"\novn vcluster: chassis registered {t_chassis:.2f}s, first ping {t_ping:.2f}s")
    finally:
        report = vcl.down(vc)

    assert report.leftovers == []
    assert net.list_ns(vc.prefix) == []
    assert not any(name.startswith(vc.prefix) for name in host_links())
    daemons = [p for p in vc.processes if p.role.startswith(("ovn", "ovs"))]
    assert {p.role for p in daemons} >= {"ovn-northd", "ovs-vswitchd", "ovn-controller"}
    assert not any(is_ours(p) for p in daemons), "an OVN/OVS daemon survived down()"
    assert not (tmp_path / "vc").exists()
