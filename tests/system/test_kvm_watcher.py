"""``corral-watcher`` on a one-node virtual cluster with real QEMU (TCG).

What an admin sees: a QEMU killed with SIGKILL leaves its ``ip rule`` and run
files behind and the instance ``ERROR_down``; one watcher pass unwires and
removes them, says so, and starts the instance again (the guest reports its
devices anew). A guest powered off from inside (``USER_down``) stays off.
Leftovers of an instance that is not on the node at all (no QEMU, not in the
config) are removed too. Two guest boots in all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import testguest
from corral import vcluster as vcl
from corral.demotools import log_size
from corral.hypervisor.kvm import runtime
from corral.hypervisor.kvm.files import KvmFiles
from corral.network import nicfiles
from corral.vcluster import net
from tests.system.kvmtools import (
    add_instance,
    gnt,
    hmp,
    instance_files,
    ip,
    kvm_vcluster,
    qemu_pids,
    routes,
    rules,
    taps,
    wait_devices,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and taps")

MAC = "aa:00:00:5e:00:01"
ADDR = "203.0.113.70"
GHOST_ADDR = "203.0.113.71"
HOLDER = (
    "import sys\n"
    "from corral.network.tap import open_tap\n"
    "t = open_tap(sys.argv[1])\n"
    "print(t.name, flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture(scope="module")
def vc(
    tmp_path_factory: pytest.TempPathFactory, guest: testguest.GuestImage
) -> Iterator[vcl.VCluster]:
    with kvm_vcluster(1, tmp_path_factory.mktemp("wd") / "vc", guest) as c:
        yield c


def watcher(vc: vcl.VCluster) -> subprocess.CompletedProcess[str]:
    return vcl.run_in(vc.master, ["corral-watcher", "--job-age=0"], check=False, timeout=300)


def status(vc: vcl.VCluster, name: str) -> str:
    return gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "status", name).stdout.strip()


def wait_status(vc: vcl.VCluster, name: str, want: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and status(vc, name) != want:
        time.sleep(0.3)
    assert status(vc, name) == want


def test_leftovers_of_an_instance_not_on_this_node_are_removed(vc: vcl.VCluster) -> None:
    """A tap some process still holds (its QEMU died), wired as a routed NIC of
    ``ghost1``, which the config does not know; and a user-shutdown marker of
    ``ghost2``, which is not here either."""
    node = vc.nodes[0]
    files = KvmFiles(node.paths)
    files.ensure()
    tap_name = f"{vc.prefix}g0"
    holder = net.popen_in(
        node.ns,
        [sys.executable, "-c", HOLDER, tap_name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == tap_name
        nic = runtime.RuntimeNic(
            mac="aa:00:00:5e:00:99",
            ip=GHOST_ADDR,
            uuid="5f2b0c3e-0000-4000-8000-0000000000aa",
            nicparams={"mode": "routed", "link": "100"},
        )
        runtime.save(files.runtime("ghost1"), runtime.KvmRuntime(["kvm"], [nic], {}, []))
        nicfiles.write_tap(files.nic_dir, "ghost1", nic.uuid, 0, tap_name)
        files.pidfile("ghost1").write_text("999999999\n")
        files.shutdown_marker("ghost2").write_text("guest-shutdown 0\n")
        env = {"INTERFACE": tap_name, "MODE": "routed", "LINK": "100", "IP": GHOST_ADDR}
        r = vcl.run_in(node, ["kvm-ifup", tap_name], env=env, check=False)
        assert r.returncode == 0, r.stderr
        assert GHOST_ADDR in routes(node.ns, "100") and f"{tap_name}:100" in rules(node.ns)

        res = watcher(vc)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"cleaned up after dead instance ghost1: kvm-ifdown {tap_name} (shutdown)" in (
            res.stdout
        )
        assert "cleaned up after dead instance ghost2: removed ctrl/ghost2.shutdown" in res.stdout
        assert GHOST_ADDR not in routes(node.ns, "100")
        assert f"{tap_name}:100" not in rules(node.ns)
        proxy_arp = Path(f"/proc/sys/net/ipv4/conf/{tap_name}/proxy_arp")
        assert net.in_ns(node.ns, proxy_arp.read_text).strip() == "0"
        assert instance_files(node, "ghost1") == [] and instance_files(node, "ghost2") == []
        assert "ghost" not in watcher(vc).stdout  # nothing left to do
    finally:
        holder.kill()
        holder.wait()


def test_killed_qemu_is_cleaned_up_and_restarted_a_user_shutdown_is_not(
    vc: vcl.VCluster,
) -> None:
    node = vc.nodes[0]
    res = add_instance(
        vc,
        "wd1",
        node.name,
        "--net",
        f"0:mac={MAC},mode=routed,link=100,ip={ADDR}",
        "-H",
        f"kvm:kernel_args=quiet corral.ip.{MAC.replace(':', '')}={ADDR}/24",
    )
    assert res.returncode == 0, res.stderr
    wait_devices(node, "wd1", macs=(MAC,))
    (pid,) = qemu_pids(node)
    (tap,) = taps(node.ns)
    assert f"{tap}:100" in rules(node.ns) and ADDR in routes(node.ns, "100")

    offset = log_size(node, "wd1")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and qemu_pids(node):
        time.sleep(0.1)
    assert status(vc, "wd1") == "ERROR_down"
    # The kernel took the route with the tap; the rule and the run files stay.
    assert ADDR not in routes(node.ns, "100") and f"{tap}:100" in rules(node.ns)
    assert "conf/wd1.runtime" in instance_files(node, "wd1")
    # While the tap name is taken, the restarted instance gets another one: the
    # old rule's fate is visible (a veth, not a tap: nothing wires it).
    ip(node.ns, "link", "add", tap, "type", "veth", "peer", "name", f"{vc.prefix}p0")

    res = watcher(vc)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"cleaned up after dead instance wd1: kvm-ifdown {tap} (shutdown)" in res.stdout
    assert "conf/wd1.runtime" in res.stdout and "nic/wd1" in res.stdout
    assert "wd1: ERROR_down, restarting it" in res.stdout and "wd1: restarted" in res.stdout
    wait_devices(node, "wd1", offset=offset, macs=(MAC,))
    assert status(vc, "wd1") == "running"
    (new_pid,) = qemu_pids(node)
    assert new_pid != pid
    (new_tap,) = taps(node.ns)
    assert new_tap != tap
    assert [r for r in rules(node.ns) if r.endswith(":100")] == [f"{new_tap}:100"]
    assert ADDR in routes(node.ns, "100")
    ip(node.ns, "link", "del", tap)

    # Powered off from inside the guest: USER_down, which the watcher leaves alone.
    hmp(node.paths.hv_run_dir("kvm") / "ctrl" / "wd1.monitor", "system_powerdown")
    wait_status(vc, "wd1", "USER_down")
    res = watcher(vc)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wd1" not in res.stdout
    assert status(vc, "wd1") == "USER_down"
    assert qemu_pids(node) == []
    assert instance_files(node, "wd1") == ["ctrl/wd1.shutdown"]
    assert [r for r in rules(node.ns) if r.endswith(":100")] == []

    gnt(vc, "gnt-instance", "remove", "-f", "wd1")
    assert instance_files(node, "wd1") == []
