"""Live NIC and disk changes of a running KVM instance, proven by the guest.

Every change is checked the way an admin would: the test guest's DEVICES
report on its serial console (MACs, disk serials and sizes), ping through
a hot-added or re-linked NIC, ``gnt-instance info`` and ``gnt-cluster
verify``, and what is left on the node (taps, runtime file, images).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from corral import testguest
from corral import vcluster as vcl
from corral.demotools import log_size
from corral.hypervisor.kvm.model import disk_serial
from tests.system.kvmtools import devices_lines, gnt, ip, ping, taps, wait_devices

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and taps")

MAC_0 = "aa:00:00:5c:00:01"
MAC_1 = "aa:00:00:5c:00:02"
MAC_2 = "aa:00:00:5c:00:03"
ADDR_0 = "203.0.113.61/24"
ADDR_1 = "203.0.113.62/24"
ADDR_2 = "198.51.100.63/24"


def kargs(*pairs: tuple[str, str]) -> str:
    return "quiet " + " ".join(f"corral.ip.{m.replace(':', '')}={a}" for m, a in pairs)


@pytest.fixture(scope="module")
def guest() -> testguest.GuestImage:
    return testguest.build()


@pytest.fixture(scope="module")
def vc(
    tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage
) -> Iterator[vcl.VCluster]:
    with vcl.virtual_cluster(1, base=tmp_path_factory.mktemp("hot") / "vc") as c:
        gnt(c, *guest.enable_kvm_argv())
        yield c


def add(vc: vcl.VCluster, name: str, *extra: str) -> None:
    res = gnt(
        vc,
        "gnt-instance",
        "add",
        "-t",
        "file",
        "--disk",
        "0:size=16M",
        "-B",
        "memory=128M",
        "-n",
        vc.nodes[0].name,
        "-o",
        "noop",
        *extra,
        name,
        check=False,
    )
    assert res.returncode == 0, res.stderr


def modify(vc: vcl.VCluster, name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = gnt(vc, "gnt-instance", "modify", *argv, name, check=False)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def wait_for(node: vcl.VNode, name: str, offset: int, pred, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in devices_lines(node, name, offset):
            if pred(line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"{name}: no matching DEVICES line; last: {devices_lines(node, name)[-1:]}")


def info(vc: vcl.VCluster, name: str) -> str:
    return gnt(vc, "gnt-instance", "info", name).stdout


def test_nic_hot_add_remove_and_relink(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    add(
        vc,
        "hot1",
        "--net",
        f"0:mac={MAC_0},link=br0",
        "-H",
        f"kvm:kernel_args={kargs((MAC_0, ADDR_0), (MAC_1, ADDR_1), (MAC_2, ADDR_2))}",
    )
    wait_devices(node, "hot1", macs=(MAC_0,))
    client = vcl.add_guest_ns(vc, node, 1, "203.0.113.201")
    assert ping(client, "203.0.113.61")

    off = log_size(node, "hot1")
    res = modify(vc, "hot1", "--net", f"add:mac={MAC_1},link=br0")
    assert "hotplug:done" in res.stdout, res.stdout
    line = wait_for(node, "hot1", off, lambda d: MAC_1 in d.macs)
    assert line.macs == {MAC_0, MAC_1}
    assert ping(client, "203.0.113.62"), "the hot-added NIC does not answer"
    assert len(taps(node.ns)) == 2

    off = log_size(node, "hot1")
    modify(vc, "hot1", "-f", "--net", "1:remove")
    line = wait_for(node, "hot1", off, lambda d: MAC_1 not in d.macs)
    assert line.macs == {MAC_0}
    assert len(taps(node.ns)) == 1
    assert "nic/1" not in info(vc, "hot1")
