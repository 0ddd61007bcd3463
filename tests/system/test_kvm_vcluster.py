"""Real QEMU instances (TCG) in a 2-node virtual cluster: boot, network, lifecycle.

Every assertion is something an admin could observe: the guest's own
report on its serial console, ping from another namespace, ``gnt-instance
list``, and what is left on the node (processes, taps, routes, files).
"""

from __future__ import annotations

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
from corral.vcluster.model import BIN
from tests.system.kvmtools import (
    add_instance,
    devices_lines,
    gnt,
    hmp,
    instance_files,
    ip,
    kvm_vcluster,
    ping,
    qemu_pids,
    routes,
    rules,
    sysctl,
    taps,
    wait_console_text,
    wait_devices,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and taps")

MAC_A = "aa:00:00:4b:00:01"
MAC_B = "aa:00:00:4b:00:02"
MAC_R = "aa:00:00:4b:00:03"


def kargs(mac: str, addr: str) -> str:
    return f"quiet corral.ip.{mac.replace(':', '')}={addr}"


@pytest.fixture(scope="module")
def vc(
    tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage
) -> Iterator[vcl.VCluster]:
    with kvm_vcluster(2, tmp_path_factory.mktemp("kvm") / "vc", guest) as c:
        yield c


def add(vc: vcl.VCluster, name: str, node: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return add_instance(vc, name, node, "--no-name-check", "--no-ip-check", *extra)


def status(vc: vcl.VCluster, name: str) -> str:
    out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "status", name).stdout
    return out.strip()


def test_an_instance_boots_on_each_node_and_answers_ping(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    for name, node, mac, addr in (
        ("inst-a", n1, MAC_A, "203.0.113.51/24"),
        ("inst-b", n2, MAC_B, "203.0.113.52/24"),
    ):
        res = add(
            vc,
            name,
            node.name,
            "--net",
            f"0:mac={mac},link=br0",
            "-H",
            f"kvm:kernel_args={kargs(mac, addr)}",
        )
        assert res.returncode == 0, res.stderr
    for name, node, mac in (("inst-a", n1, MAC_A), ("inst-b", n2, MAC_B)):
        line = wait_devices(node, name, macs=(mac,))
        disk_uuid = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "disk.uuids", name).stdout
        assert [b.serial for b in line.blk] == [disk_serial(disk_uuid.strip().split(",")[0])]
        assert status(vc, name) == "running"
    client = vcl.add_guest_ns(vc, n1, 1, "203.0.113.200")
    assert ping(client, "203.0.113.51"), "inst-a (node1) does not answer"
    assert ping(client, "203.0.113.52"), "inst-b (node2, across the VM network) does not answer"


def test_info_shows_live_state_from_qmp(vc: vcl.VCluster) -> None:
    out = gnt(vc, "gnt-instance", "info", "inst-a").stdout
    assert "actual state is running" in out
    assert "Running: pid" in out and "memory 128 MiB" in out
    assert "Allocated network port: 110" in out


def test_shutdown_startup_and_reboots(vc: vcl.VCluster) -> None:
    n1 = vc.nodes[0]
    off = log_size(n1, "inst-a")
    gnt(vc, "gnt-instance", "shutdown", "--timeout=60", "inst-a")
    wait_console_text(n1, "inst-a", "POWEROFF", offset=off)  # the guest got ACPI and powered off
    assert status(vc, "inst-a") == "ADMIN_down"
    assert qemu_pids(n1) == []
    assert taps(n1.ns) == []
    assert instance_files(n1, "inst-a") == []

    off = log_size(n1, "inst-a")
    gnt(vc, "gnt-instance", "startup", "inst-a")
    wait_devices(n1, "inst-a", offset=off, macs=(MAC_A,))
    assert len(taps(n1.ns)) == 1

    pid = qemu_pids(n1)
    off = log_size(n1, "inst-a")
    gnt(vc, "gnt-instance", "reboot", "--type=hard", "inst-a")
    line = wait_devices(n1, "inst-a", offset=off, macs=(MAC_A,))
    assert qemu_pids(n1) == pid, "a hard reboot resets the same QEMU"
    assert line.uptime < 30

    off = log_size(n1, "inst-a")
    gnt(vc, "gnt-instance", "reboot", "--type=soft", "inst-a")
    wait_console_text(n1, "inst-a", "POWEROFF", offset=off)
    wait_devices(n1, "inst-a", offset=off, macs=(MAC_A,))
    assert qemu_pids(n1) != pid and len(qemu_pids(n1)) == 1
    client = f"{vc.prefix}g1"
    assert ping(client, "203.0.113.51")


def test_guest_initiated_poweroff_is_a_user_shutdown(vc: vcl.VCluster) -> None:
    n1 = vc.nodes[0]
    monitor = n1.paths.hv_run_dir("kvm") / "ctrl" / "inst-a.monitor"
    off = log_size(n1, "inst-a")
    # The admin's HMP monitor presses the power button: Corral did not ask for it.
    hmp(monitor, "system_powerdown")
    wait_console_text(n1, "inst-a", "POWEROFF", offset=off)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and status(vc, "inst-a") != "USER_down":
        time.sleep(0.2)
    assert status(vc, "inst-a") == "USER_down"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and qemu_pids(n1):
        time.sleep(0.2)
    assert qemu_pids(n1) == [] and taps(n1.ns) == []
    off = log_size(n1, "inst-a")
    gnt(vc, "gnt-instance", "startup", "inst-a")
    wait_devices(n1, "inst-a", offset=off, macs=(MAC_A,))
    assert status(vc, "inst-a") == "running"


def test_console_through_the_node_daemon(vc: vcl.VCluster) -> None:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", vc.master.ns, str(BIN / "gnt-instance"), "console", "inst-b"],
        env={**os.environ, **vc.master.env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.5)
        gnt(vc, "gnt-instance", "reboot", "--type=hard", "inst-b")
        deadline = time.monotonic() + 60
        seen = b""
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
        while time.monotonic() < deadline and b"DEVICES" not in seen:
            chunk = proc.stdout.read() if proc.stdout else None  # type: ignore[union-attr]
            seen += chunk or b""
            time.sleep(0.1)
        assert b"DEVICES" in seen, (seen[-500:], proc.stderr.read() if proc.stderr else b"")
    finally:
        proc.kill()
        proc.wait()


def test_routed_nic_answers_ping_through_the_node(vc: vcl.VCluster) -> None:
    n2 = vc.nodes[1]
    # Admin configuration on node2: an uplink to a client network and table 100.
    client = f"{vc.prefix}rc"
    subprocess.run(["ip", "netns", "add", client], check=True)
    vc.namespaces.append(client)
    vc.save()
    ip(n2.ns, "link", "add", "up0", "type", "veth", "peer", "name", "c0", "netns", client)
    ip(n2.ns, "addr", "add", "203.0.113.129/28", "dev", "up0")
    ip(n2.ns, "link", "set", "up0", "up")
    ip(client, "addr", "add", "203.0.113.130/28", "dev", "c0")
    ip(client, "link", "set", "c0", "up")
    ip(client, "route", "add", "203.0.113.60/32", "via", "203.0.113.129")
    ip(n2.ns, "route", "add", "203.0.113.128/28", "dev", "up0", "table", "100")
    ip(n2.ns, "rule", "add", "iif", "up0", "lookup", "100")
    sysctl(n2.ns, "net.ipv4.ip_forward", "1")

    res = add(
        vc,
        "inst-r",
        n2.name,
        "--net",
        f"0:mac={MAC_R},mode=routed,link=100,ip=203.0.113.60",
        "-H",
        f"kvm:kernel_args={kargs(MAC_R, '203.0.113.60/24')}",
    )
    assert res.returncode == 0, res.stderr
    wait_devices(n2, "inst-r", macs=(MAC_R,))
    assert "203.0.113.60" in routes(n2.ns, "100")
    assert ping(client, "203.0.113.60"), "routed instance does not answer through node2"

    gnt(vc, "gnt-instance", "remove", "-f", "inst-r")
    assert "203.0.113.60" not in routes(n2.ns, "100")
    assert not any(r.startswith("tap") for r in rules(n2.ns))
    assert instance_files(n2, "inst-r") == []


def test_a_failing_kvm_ifup_undoes_the_nics_already_wired(vc: vcl.VCluster) -> None:
    n2 = vc.nodes[1]
    taps_before, qemus_before = taps(n2.ns), qemu_pids(n2)  # inst-b runs there
    custom = n2.paths.conf_dir / "kvm-ifup-custom"
    # NIC 0 (routed) is wired for real; NIC 1's kvm-ifup fails.
    custom.write_text(
        '#!/bin/sh\n[ "$INTERFACE_INDEX" = 1 ] && { echo "no uplink for $INTERFACE"; exit 1; }\n'
        f'exec {BIN}/kvm-ifup --no-custom "$@"\n'
    )
    custom.chmod(0o755)
    try:
        res = add(
            vc,
            "inst-half",
            n2.name,
            "--net",
            "0:mode=routed,link=100,ip=203.0.113.61",
            "--net",
            "1:link=br0",
        )
    finally:
        custom.unlink()
    assert res.returncode != 0
    assert "Failed to configure interface" in res.stderr and "no uplink" in res.stderr
    assert "203.0.113.61" not in routes(n2.ns, "100"), "NIC 0's route was left behind"
    assert not any(r.startswith("tap") for r in rules(n2.ns))
    assert taps(n2.ns) == taps_before and qemu_pids(n2) == qemus_before
    assert instance_files(n2, "inst-half") == []
    out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "name").stdout.split()
    assert "inst-half" not in out


def test_kvm_ifup_custom_sees_ganeti_environment(vc: vcl.VCluster) -> None:
    n2 = vc.nodes[1]
    envfile = Path(n2.root) / "ifup-env.txt"
    custom = n2.paths.conf_dir / "kvm-ifup-custom"
    custom.write_text(
        f'#!/bin/sh\nenv > {envfile}\necho "ARGV=$*" >> {envfile}\n'
        f'exec {BIN}/kvm-ifup --no-custom "$@"\n'
    )
    custom.chmod(0o755)
    try:
        mac = "aa:00:00:4b:00:04"
        res = add(
            vc,
            "inst-env",
            n2.name,
            "--net",
            f"0:mac={mac},link=br0,name=front",
            "--tags",
            "web,prod",
            "-H",
            f"kvm:kernel_args={kargs(mac, '203.0.113.54/24')}",
        )
        assert res.returncode == 0, res.stderr
        env = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
        tap = env["INTERFACE"]
        assert env["ARGV"] == tap
        assert env["INSTANCE"] == "inst-env"
        assert env["MAC"] == mac
        assert env["MODE"] == "bridged" and env["LINK"] == "br0" and env["BRIDGE"] == "br0"
        assert env["INTERFACE_INDEX"] == "0" and env["INTERFACE_NAME"] == "front"
        assert len(env["INTERFACE_UUID"]) == 36
        assert set(env["TAGS"].split()) == {"web", "prod"}
        wait_devices(n2, "inst-env", macs=(mac,))
        assert ping(f"{vc.prefix}g1", "203.0.113.54"), "the chained built-in setup bridged the tap"
        tapfile = n2.paths.hv_run_dir("kvm") / "nic" / "inst-env" / "0"
        assert tapfile.is_symlink() and tapfile.read_text().strip() == tap
    finally:
        custom.unlink()
        gnt(vc, "gnt-instance", "remove", "-f", "inst-env", check=False)


def test_remove_leaves_nothing_behind(vc: vcl.VCluster) -> None:
    n1, n2 = vc.nodes
    images = [
        p for node in (n1, n2) for p in Path(node.root).rglob("*.img") if "file-storage" in str(p)
    ]
    assert images
    for name in ("inst-a", "inst-b"):
        gnt(vc, "gnt-instance", "remove", "-f", name)
    for node in (n1, n2):
        assert qemu_pids(node) == []
        assert taps(node.ns) == []
        assert instance_files(node, "inst-a") == [] and instance_files(node, "inst-b") == []
    assert not any(p.exists() for p in images)
    assert devices_lines(n1, "inst-a")  # the console log is kept for the admin
