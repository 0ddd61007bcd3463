"""Live NIC/disk changes that go wrong: full slots, duplicates, dead QEMU, dead master.

Issue 5, items 9 and 10, in a 1-node virtual cluster with the real test
guest under TCG. Every check is one an admin can make: the guest's DEVICES
report on its serial console, ``gnt-instance info``/``list``, ``gnt-cluster
verify``, ``gnt-job list``/``info``, the taps in the node's namespace, the
node's runtime file and disk images. Two instances boot, together, at the
start: ``pv1`` (QEMU as nobody in a chroot, whose free PCI slots get
filled) and ``fl1`` (whose QEMU, then master daemon, die during a hot-add).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral import testguest
from corral import vcluster as vcl
from corral.demotools import log_size
from corral.hypervisor.kvm.model import disk_serial
from corral.testguest import DevicesLine
from corral.vcluster.model import BIN
from tests.system.kvmtools import (
    add_instance,
    devices_lines,
    gnt,
    kvm_vcluster,
    restart_masterd,
    taps,
    wait_devices,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and taps")

MAC_P0 = "aa:00:00:5d:00:01"  # pv1's boot NIC
MAC_P1 = "aa:00:00:5d:00:02"  # hot-added into pv1
MAC_P2 = "aa:00:00:5d:00:03"  # finds no free slot, then is added without hotplug
MAC_F0 = "aa:00:00:5d:00:11"  # fl1's boot NIC
MAC_KILL = "aa:00:00:5d:00:12"  # its kvm-ifup kills fl1's QEMU
MAC_SLOW = "aa:00:00:5d:00:13"  # its kvm-ifup is slow; the master dies meanwhile
MAC_LOST = "aa:00:00:5d:00:14"  # the same, and then its kvm-ifup fails
PV1_HV = "kvm:security_model=user,security_domain=nobody,use_chroot=true,kvm_pci_reservations=28"
NOT_LIVE_NOTE = "take effect only at the next (re)start"


@pytest.fixture(scope="module")
def vc(
    tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage
) -> Iterator[vcl.VCluster]:
    with kvm_vcluster(1, tmp_path_factory.mktemp("hotf") / "vc", guest) as c:
        # Both guests boot while the first tests run (TCG boots are the slow part).
        add(c, "pv1", MAC_P0, "-H", PV1_HV)
        add(c, "fl1", MAC_F0)
        yield c


def add(vc: vcl.VCluster, name: str, mac: str, *extra: str) -> None:
    res = add_instance(vc, name, vc.nodes[0].name, "--net", f"0:mac={mac},link=br0", *extra)
    assert res.returncode == 0, res.stderr


# --- what an admin looks at ----------------------------------------------------------------


def modify(vc: vcl.VCluster, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return gnt(vc, "gnt-instance", "modify", *argv, name, check=False)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def field(vc: vcl.VCluster, name: str, fld: str) -> str:
    return gnt(vc, "gnt-instance", "list", "--no-headers", "-o", fld, name).stdout.strip()


def info(vc: vcl.VCluster, name: str) -> str:
    return gnt(vc, "gnt-instance", "info", name).stdout


def verify(vc: vcl.VCluster) -> subprocess.CompletedProcess[str]:
    return gnt(vc, "gnt-cluster", "verify", check=False)


def problems(res: subprocess.CompletedProcess[str]) -> list[str]:
    """The ERROR and WARNING lines of a ``gnt-cluster verify``."""
    return [
        ln for ln in (res.stdout + res.stderr).splitlines() if "ERROR:" in ln or "WARNING:" in ln
    ]


def assert_clean(vc: vcl.VCluster) -> None:
    res = verify(vc)
    assert res.returncode == 0 and problems(res) == [], res.stdout + res.stderr


def runtime(vc: vcl.VCluster, name: str) -> list[list[dict[str, object]]]:
    """``[kvm_cmd, nics, hvparams, block_devices]``: the node's record of the running QEMU."""
    path = vc.nodes[0].paths.hv_run_dir("kvm") / "conf" / f"{name}.runtime"
    data: list[list[dict[str, object]]] = json.loads(path.read_text())
    return data


def runtime_nics(vc: vcl.VCluster, name: str) -> dict[str, str]:
    """MAC → PCI slot of every NIC the runtime file records, in its order."""
    return {str(n["mac"]): n["hvinfo"]["addr"] for n in runtime(vc, name)[1]}  # type: ignore[index]


def runtime_slots(vc: vcl.VCluster, name: str) -> list[int]:
    rt = runtime(vc, name)
    infos = [n["hvinfo"] for n in rt[1]] + [d[0]["hvinfo"] for d in rt[3]]  # type: ignore[index]
    return sorted(int(i["addr"], 16) for i in infos)  # type: ignore[index]


def pidfile(vc: vcl.VCluster, name: str) -> Path:
    return vc.nodes[0].paths.hv_run_dir("kvm") / "pid" / name


def qemu_pid(vc: vcl.VCluster, name: str) -> int:
    return int(pidfile(vc, name).read_text().split()[0])


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(ln for ln in status if ln.startswith("Uid:")).split()[1])


def disk_image(vc: vcl.VCluster, name: str, index: int) -> Path:
    """Where disk ``index`` of ``name`` lives on the node (from gnt-instance info)."""
    paths = [
        raw.split("on primary:", 1)[1].strip()
        for raw in info(vc, name).splitlines()
        if "on primary:" in raw
    ]
    return vc.nodes[0].paths.host_path(paths[index])


def wait_for(
    node: vcl.VNode, name: str, offset: int, pred: Callable[[DevicesLine], bool]
) -> DevicesLine:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in devices_lines(node, name, offset):
            if pred(line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"{name}: no such DEVICES line; last: {devices_lines(node, name)[-1:]}")


def last_devices(node: vcl.VNode, name: str) -> DevicesLine:
    return devices_lines(node, name)[-1]


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def custom_ifup(vc: vcl.VCluster, body: str) -> Path:
    """The node's ``kvm-ifup-custom``: ``body``, then the built-in setup."""
    script = vc.nodes[0].paths.conf_dir / "kvm-ifup-custom"
    script.write_text(f'#!/bin/sh\n{body}\nexec {BIN}/kvm-ifup --no-custom "$@"\n')
    script.chmod(0o755)
    return script


# --- 1. unprivileged QEMU ------------------------------------------------------------------


def test_hot_add_into_an_unprivileged_chrooted_qemu(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    wait_devices(node, "pv1", macs=(MAC_P0,))
    pid = qemu_pid(vc, "pv1")
    nobody = pwd.getpwnam("nobody").pw_uid
    assert uid_of(pid) == nobody
    assert os.readlink(f"/proc/{pid}/root") == str(node.paths.hv_run_dir("kvm") / "chroot" / "pv1")
    assert runtime_slots(vc, "pv1") == [28, 29]

    off = log_size(node, "pv1")
    out = ok(modify(vc, "pv1", "--disk", "add:size=8M"))
    assert "hotplug:done" in out and NOT_LIVE_NOTE not in out, out
    serial = disk_serial(field(vc, "pv1", "disk.uuids").split(",")[1])
    line = wait_for(node, "pv1", off, lambda d: serial in d.serials)
    assert next(b for b in line.blk if b.serial == serial).size_mib == 8

    off = log_size(node, "pv1")
    ok(modify(vc, "pv1", "--net", f"add:mac={MAC_P1},link=br0"))
    line = wait_for(node, "pv1", off, lambda d: MAC_P1 in d.macs)
    assert line.macs == {MAC_P0, MAC_P1} and len(line.blk) == 2
    assert qemu_pid(vc, "pv1") == pid and uid_of(pid) == nobody  # the same QEMU, still nobody
    assert_clean(vc)


# --- 2. every slot taken -------------------------------------------------------------------


def test_no_free_slot_is_refused_and_changes_nothing(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    assert runtime_slots(vc, "pv1") == [28, 29, 30, 31]
    taps_before, seen = taps(node.ns), last_devices(node, "pv1")
    off = log_size(node, "pv1")
    res = modify(vc, "pv1", "--net", f"add:mac={MAC_P2},link=br0")
    assert res.returncode != 0
    assert "no free PCI slot" in res.stderr and "remove a device first" in res.stderr, res.stderr
    assert field(vc, "pv1", "nic.count") == "2"
    assert MAC_P2 not in info(vc, "pv1")
    assert taps(node.ns) == taps_before
    assert runtime_slots(vc, "pv1") == [28, 29, 30, 31]
    assert devices_lines(node, "pv1", off) == []  # the guest saw no change
    assert last_devices(node, "pv1") == seen
    assert_clean(vc)


# --- 3. duplicates and repeats -------------------------------------------------------------


def test_duplicate_mac_is_refused_and_a_repeated_plug_changes_nothing(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    taps_before, slots = taps(node.ns), runtime_nics(vc, "pv1")
    off = log_size(node, "pv1")
    res = modify(vc, "pv1", "--net", f"add:mac={MAC_F0},link=br0")  # fl1 has it
    assert res.returncode != 0
    assert f"MAC address {MAC_F0} already in use" in res.stderr, res.stderr
    assert field(vc, "pv1", "nic.count") == "2"

    # Plugging a NIC that is plugged already succeeds, and nothing moves.
    out = ok(modify(vc, "pv1", "--net", "1:modify"))
    assert "wiring unchanged" in out, out
    assert taps(node.ns) == taps_before
    assert runtime_nics(vc, "pv1") == slots
    assert devices_lines(node, "pv1", off) == []
    assert MAC_P1 in last_devices(node, "pv1").macs
    assert_clean(vc)


# --- 4. devices added without hotplug ------------------------------------------------------


def test_removing_devices_that_were_never_plugged(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    off = log_size(node, "pv1")
    # MAC_P2 is free again: the refused add of test 2 did not keep it.
    out = ok(
        modify(
            vc,
            "pv1",
            "--no-hotplug",
            "--net",
            f"add:mac={MAC_P2},link=br0",
            "--disk",
            "add:size=8M",
        )
    )
    assert "hotplug:deferred" in out and NOT_LIVE_NOTE in out, out
    pending = info(vc, "pv1")
    assert "Pending changes" in pending
    assert f"nic/2 ({MAC_P2}) is configured but not plugged in" in pending
    assert "disk/2 is configured but not plugged in" in pending
    res = verify(vc)
    assert res.returncode == 0, res.stdout  # pending changes are warnings
    warned = [ln for ln in problems(res) if "WARNING: instance pv1" in ln]
    assert any(MAC_P2 in ln for ln in warned) and any("disk/2" in ln for ln in warned), warned

    image = disk_image(vc, "pv1", 2)
    assert image.is_file()
    ok(modify(vc, "pv1", "-f", "--net", "2:remove", "--disk", "2:remove"))
    assert not image.exists(), "the removed disk's image is still there"
    assert "Pending changes" not in info(vc, "pv1")
    assert field(vc, "pv1", "nic.count") == "2" and field(vc, "pv1", "disk.count") == "2"
    assert devices_lines(node, "pv1", off) == []  # the guest never saw either

    # A real change now: the guest's next report holds none of the refused or
    # deferred devices of tests 2 to 4, only its own.
    off = log_size(node, "pv1")
    ok(modify(vc, "pv1", "-f", "--disk", "1:remove"))
    line = wait_for(node, "pv1", off, lambda d: len(d.blk) == 1)
    assert line.macs == {MAC_P0, MAC_P1}
    assert_clean(vc)


# --- 5. QEMU dies in the middle of a hot-add -----------------------------------------------


def test_qemu_killed_during_a_hot_add(vc: vcl.VCluster) -> None:
    node = vc.nodes[0]
    wait_devices(node, "fl1", macs=(MAC_F0,))
    taps_of_pv1 = len(taps(node.ns)) - 1
    script = custom_ifup(
        vc,
        f'if [ "$MAC" = "{MAC_KILL}" ]; then\n'
        f'  pid=$(cat {pidfile(vc, "fl1")}); kill -9 "$pid"\n'
        '  while [ -s /proc/"$pid"/cmdline ]; do sleep 0.05; done\n'
        "  exit 0\n"
        "fi",
    )
    try:
        res = modify(vc, "fl1", "--net", f"add:mac={MAC_KILL},link=br0")
    finally:
        script.unlink()
    assert res.returncode != 0
    assert "could not add nic 1 of fl1 live" in res.stderr, res.stderr
    assert "QEMU of fl1 exited during the hot-add" in res.stderr, res.stderr
    assert "gnt-instance startup" in res.stderr, res.stderr
    assert field(vc, "fl1", "nic.macs") == MAC_F0
    assert field(vc, "fl1", "status") == "ERROR_down"
    assert len(taps(node.ns)) == taps_of_pv1
    res = verify(vc)
    assert res.returncode != 0
    assert any("ERROR: instance fl1" in ln and "not running" in ln for ln in problems(res)), (
        res.stdout
    )

    off = log_size(node, "fl1")
    gnt(vc, "gnt-instance", "startup", "fl1")
    line = wait_devices(node, "fl1", offset=off, macs=(MAC_F0,))
    assert line.macs == {MAC_F0} and len(line.blk) == 1
    assert field(vc, "fl1", "status") == "running"
    assert len(taps(node.ns)) == taps_of_pv1 + 1
    assert_clean(vc)


# --- 6. the master dies in the middle of a hot-add -----------------------------------------


def hot_add_while_the_master_dies(vc: vcl.VCluster, mac: str, *, ifup_fails: bool) -> str:
    """``modify --submit --net add`` whose kvm-ifup (slow, the first time only) outlives
    the master daemon; returns the job id once the node is done with the hot-add."""
    node = vc.nodes[0]
    mark = Path(node.root) / f"ifup-{mac.replace(':', '')}"
    taps_before = len(taps(node.ns))
    then = "false" if ifup_fails else f'{BIN}/kvm-ifup --no-custom "$@"'
    script = custom_ifup(
        vc,
        f'if [ "$MAC" = "{mac}" ] && [ ! -e {mark}.started ]; then\n'
        f"  touch {mark}.started; sleep 2\n"
        f"  {then}; rc=$?; touch {mark}.done; exit $rc\n"
        "fi",
    )
    try:
        out = ok(modify(vc, "fl1", "--submit", "--net", f"add:mac={mac},link=br0"))
        job = out.split("JobID:", 1)[1].split()[0]
        wait_until(lambda: Path(f"{mark}.started").exists(), "the slow kvm-ifup never ran")
        restart_masterd(vc)
        wait_until(lambda: Path(f"{mark}.done").exists(), "the slow kvm-ifup never finished")
        # The node has finished once the NIC is recorded, or its tap is gone again.
        wait_until(
            lambda: mac in runtime_nics(vc, "fl1") or len(taps(node.ns)) == taps_before,
            "the node never finished the hot-add",
        )
    finally:
        script.unlink()
    return job


def assert_job_ended(vc: vcl.VCluster, job: str) -> None:
    rows = gnt(vc, "gnt-job", "list", "--no-headers", "-o", "id,status").stdout.splitlines()
    status = dict(r.split() for r in rows if r.strip())[job]
    assert status in ("success", "error"), status
    if status == "error":
        assert "master daemon restarted" in gnt(vc, "gnt-job", "info", job).stdout


def assert_converges(vc: vcl.VCluster, name: str) -> None:
    """Config, runtime file and guest agree, or verify names the difference and
    ``modify --net N:modify`` (the repair it advises) makes them agree."""
    node = vc.nodes[0]
    configured = field(vc, name, "nic.macs").split(",")
    plugged = runtime_nics(vc, name)
    missing = [(i, m) for i, m in enumerate(configured) if m not in plugged]
    assert set(plugged) <= set(configured), f"plugged but not configured: {plugged}"
    if missing:
        res = verify(vc)
        for i, mac in missing:
            want = f"nic/{i} ({mac}) is configured but not plugged in"
            assert any(want in ln for ln in problems(res)), res.stdout
            assert want in info(vc, name)
            ok(modify(vc, name, "--net", f"{i}:modify"))
    assert list(runtime_nics(vc, name)) == configured
    wait_devices(node, name, macs=tuple(configured))
    assert last_devices(node, name).macs == set(configured)
    assert_clean(vc)


def test_master_killed_during_a_hot_add_that_succeeds_on_the_node(vc: vcl.VCluster) -> None:
    job = hot_add_while_the_master_dies(vc, MAC_SLOW, ifup_fails=False)
    assert_job_ended(vc, job)
    assert_converges(vc, "fl1")


def test_master_killed_during_a_hot_add_that_fails_on_the_node(vc: vcl.VCluster) -> None:
    job = hot_add_while_the_master_dies(vc, MAC_LOST, ifup_fails=True)
    assert_job_ended(vc, job)
    assert_converges(vc, "fl1")
