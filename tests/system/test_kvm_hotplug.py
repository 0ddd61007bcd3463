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
from pathlib import Path

import pytest

from corral import testguest
from corral import vcluster as vcl
from corral.demotools import log_size
from corral.hypervisor.kvm.model import disk_serial
from tests.system.kvmtools import (
    add_instance,
    devices_lines,
    gnt,
    ip,
    kvm_vcluster,
    ping,
    taps,
    wait_devices,
)

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
def vc(
    tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage
) -> Iterator[vcl.VCluster]:
    with kvm_vcluster(1, tmp_path_factory.mktemp("hot") / "vc", guest) as c:
        yield c


def add(vc: vcl.VCluster, name: str, *extra: str) -> None:
    res = add_instance(vc, name, vc.nodes[0].name, *extra)
    assert res.returncode == 0, res.stderr


def modify(
    vc: vcl.VCluster, name: str, *argv: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
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
    last = devices_lines(node, name)[-1:]
    raise AssertionError(f"{name}: no matching DEVICES line; last: {last}")


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


def runtime_file(vc: vcl.VCluster, name: str) -> dict[str, object]:
    path = vc.nodes[0].paths.hv_run_dir("kvm") / "conf" / f"{name}.runtime"
    data: list[object] = json.loads(path.read_text())
    return {"nics": data[1], "disks": data[3] if len(data) > 3 else []}


def nic_slot(vc: vcl.VCluster, name: str, mac: str) -> str:
    nics = runtime_file(vc, name)["nics"]
    assert isinstance(nics, list)
    return next(str(n["hvinfo"]["addr"]) for n in nics if n["mac"] == mac)


def test_nic_relink_keeps_the_guest_nic_and_moves_its_traffic(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    # A second network on the node: bridge br1 and a client namespace on it.
    client = f"{vc.prefix}c1"
    ip(node.ns, "link", "add", "br1", "type", "bridge")
    ip(node.ns, "link", "set", "br1", "up")
    subprocess.run(["ip", "netns", "add", client], check=True)
    try:
        ip(node.ns, "link", "add", "c1", "type", "veth", "peer", "name", "eth0", "netns", client)
        ip(node.ns, "link", "set", "c1", "master", "br1", "up")
        ip(client, "addr", "add", "198.51.100.201/24", "dev", "eth0")
        ip(client, "link", "set", "eth0", "up")

        off = log_size(node, "hot1")
        modify(vc, "hot1", "--net", f"add:mac={MAC_2},link=br0")
        wait_for(node, "hot1", off, lambda d: MAC_2 in d.macs)
        assert not ping(client, "198.51.100.63", timeout=2), "reachable before the re-link?"
        slot = nic_slot(vc, "hot1", MAC_2)

        off = log_size(node, "hot1")
        res = modify(vc, "hot1", "--net", "1:modify,link=br1")
        assert "hotplug:done" in res.stdout and "re-linked" in res.stdout, res.stdout
        assert ping(client, "198.51.100.63"), "the re-linked NIC does not answer on br1"
        # The guest kept its NIC: no DEVICES change was reported, same slot.
        assert all(MAC_2 in d.macs for d in devices_lines(node, "hot1", off))
        assert nic_slot(vc, "hot1", MAC_2) == slot
        assert "Pending changes" not in info(vc, "hot1")

        # A new MAC is an unplug and a plug at the same slot, after a warning.
        new_mac = "aa:00:00:5c:00:09"
        off = log_size(node, "hot1")
        res = modify(vc, "hot1", "-f", "--net", f"1:modify,mac={new_mac}")
        assert "WARNING" in res.stdout + res.stderr and "MAC" in res.stdout + res.stderr
        line = wait_for(node, "hot1", off, lambda d: new_mac in d.macs)
        assert MAC_2 not in line.macs
        assert nic_slot(vc, "hot1", new_mac) == slot
        modify(vc, "hot1", "-f", "--net", "1:remove")
    finally:
        subprocess.run(["ip", "netns", "del", client], check=False)


def test_disk_hot_add_grow_and_remove(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    off = log_size(node, "hot1")
    res = modify(vc, "hot1", "--disk", "add:size=32M,name=data")
    assert "hotplug:done" in res.stdout, res.stdout
    uuid = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "disk.uuids", "hot1").stdout
    serial = disk_serial(uuid.strip().split(",")[1])
    line = wait_for(node, "hot1", off, lambda d: serial in d.serials)
    disk = next(b for b in line.blk if b.serial == serial)
    assert disk.size_mib == 32

    off = log_size(node, "hot1")
    gnt(vc, "gnt-instance", "grow-disk", "hot1", "1", "16M")
    line = wait_for(
        node, "hot1", off, lambda d: any(b.serial == serial and b.size_mib == 48 for b in d.blk)
    )
    assert "disk/1 is" not in info(vc, "hot1")  # config and runtime agree on 48 MiB

    image = disk_image(vc, "hot1", 1)
    assert image.stat().st_size == 48 << 20
    off = log_size(node, "hot1")
    modify(vc, "hot1", "-f", "--disk", "data:remove")
    line = wait_for(node, "hot1", off, lambda d: serial not in d.serials and len(d.blk) == 1)
    assert len(line.blk) == 1
    assert not image.exists(), "the removed disk's image is still there"


def disk_image(vc: vcl.VCluster, name: str, index: int) -> Path:
    """Where disk ``index`` of ``name`` lives on the node (from gnt-instance info)."""
    paths = [
        raw.split("on primary:", 1)[1].strip()
        for raw in info(vc, name).splitlines()
        if "on primary:" in raw
    ]
    return vc.nodes[0].paths.host_path(paths[index])


MAC_3 = "aa:00:00:5c:00:04"
MAC_4 = "aa:00:00:5c:00:05"


def test_no_hotplug_defers_changes_to_the_next_start(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    off = log_size(node, "hot1")
    res = modify(vc, "hot1", "--no-hotplug", "--net", f"add:mac={MAC_3},link=br0")
    assert "hotplug:deferred" in res.stdout and "next (re)start" in res.stdout, res.stdout
    res = modify(vc, "hot1", "--no-hotplug", "--disk", "add:size=8M")
    assert "hotplug:deferred" in res.stdout
    shown = info(vc, "hot1")
    assert "Pending changes" in shown
    assert f"nic/1 ({MAC_3}) is configured but not plugged in" in shown
    assert "disk/1 is configured but not plugged in" in shown
    verify = gnt(vc, "gnt-cluster", "verify", check=False)
    assert f"nic/1 ({MAC_3}) is configured but not plugged in" in verify.stdout + verify.stderr
    # The guest saw nothing; data of a plugged disk is never deleted behind its back.
    assert all(MAC_3 not in d.macs for d in devices_lines(node, "hot1", off))
    refused = modify(vc, "hot1", "-f", "--no-hotplug", "--disk", "1:remove", check=False)
    assert refused.returncode != 0 and "without hotplug" in refused.stdout + refused.stderr

    # The cluster's switch sets the default: off, a plain modify defers too.
    gnt(vc, "gnt-cluster", "modify", "--hotplug-by-default=no")
    try:
        res = modify(vc, "hot1", "--net", "add:mac=aa:00:00:5c:00:0a,link=br0")
        assert "hotplug:deferred" in res.stdout, res.stdout
        modify(vc, "hot1", "-f", "--net", "2:remove")
    finally:
        gnt(vc, "gnt-cluster", "modify", "--hotplug-by-default=yes")

    off = log_size(node, "hot1")
    gnt(vc, "gnt-instance", "reboot", "--type=full", "hot1")
    line = wait_for(node, "hot1", off, lambda d: MAC_3 in d.macs and len(d.blk) == 2)
    assert line.macs == {MAC_0, MAC_3}
    assert "Pending changes" not in info(vc, "hot1")


def test_hotplug_into_a_stopped_instance(vc: vcl.VCluster) -> None:
    gnt(vc, "gnt-instance", "shutdown", "--timeout=30", "hot1")
    try:
        res = modify(vc, "hot1", "--hotplug", "--net", f"add:mac={MAC_4}", check=False)
        assert res.returncode != 0 and "not running" in res.stdout + res.stderr
        assert MAC_4 not in info(vc, "hot1")
        # Without --hotplug the change is made in the configuration only.
        res = modify(vc, "hot1", "--net", f"add:mac={MAC_4}")
        assert "hotplug:deferred" not in res.stdout and MAC_4 in info(vc, "hot1")
        modify(vc, "hot1", "-f", "--net", "2:remove")
    finally:
        gnt(vc, "gnt-instance", "startup", "hot1")
    wait_devices(vc.nodes[0], "hot1", macs=(MAC_0, MAC_3))


def _legacy(entries: list[dict[str, object]]) -> None:
    """Ganeti ≤ 2.15 recorded only a PCI slot per device: ``pci`` instead of ``hvinfo``."""
    for dev in entries:
        info_ = dev.pop("hvinfo")
        assert isinstance(info_, dict)
        dev["pci"] = int(str(info_["addr"]), 16)


def test_old_runtime_files_are_upgraded_and_hotplug_works(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    path = node.paths.hv_run_dir("kvm") / "conf" / "hot1.runtime"
    # 1. A 4-element file with pci-keyed devices; a soft reboot relaunches QEMU from it,
    # so the running devices carry Ganeti 2.15's ids.
    data = json.loads(path.read_text())
    _legacy(data[1])
    _legacy([d[0] for d in data[3]])
    path.write_text(json.dumps(data))
    off = log_size(node, "hot1")
    gnt(vc, "gnt-instance", "reboot", "hot1")
    wait_for(node, "hot1", off, lambda d: d.macs == {MAC_0, MAC_3})
    nics = json.loads(path.read_text())[1]
    legacy_id = next(n["hvinfo"]["id"] for n in nics if n["mac"] == MAC_3)
    assert legacy_id.startswith("hotnic-") and "-pci-" in legacy_id
    off = log_size(node, "hot1")
    modify(vc, "hot1", "-f", "--net", "1:remove")  # found by its legacy id
    wait_for(node, "hot1", off, lambda d: d.macs == {MAC_0})
    off = log_size(node, "hot1")
    modify(vc, "hot1", "--net", f"add:mac={MAC_3},link=br0")
    wait_for(node, "hot1", off, lambda d: d.macs == {MAC_0, MAC_3})

    # 2. A 3-element file (before disks were recorded): the disks' slots are known
    # only to QEMU (query-pci), and a hot-added disk must not collide with them.
    data = json.loads(path.read_text())
    _legacy(data[1])
    path.write_text(json.dumps(data[:3]))
    off = log_size(node, "hot1")
    modify(vc, "hot1", "--disk", "add:size=8M")
    line = wait_for(node, "hot1", off, lambda d: len(d.blk) == 3)
    assert len({b.serial for b in line.blk}) == 3
    assert len(json.loads(path.read_text())) == 4  # rewritten in the current format
    # What the old file did not record is reported, not hidden.
    assert "which the node's runtime file does not list" in info(vc, "hot1")
    off = log_size(node, "hot1")
    gnt(vc, "gnt-instance", "reboot", "--type=full", "hot1")
    wait_for(node, "hot1", off, lambda d: len(d.blk) == 3 and d.macs == {MAC_0, MAC_3})
    assert "Pending changes" not in info(vc, "hot1")
