"""The demo's VM part: boot ``web1``, hotplug, live migration, reboot, shutdown.

Layer: demo. Every step is a real command on the virtual cluster, and every
claim is checked the way an admin would: the guest's own console report and
ping from a client namespace.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from corral import demotools as dt
from corral import testguest
from corral import vcluster as vcl
from corral.demo_tour import (
    BOOT_TIMEOUT,
    CLIENT_IP,
    CLIENT_NODE,
    GUEST,
    GUEST_ADDRESSES,
    GUEST_IP,
    GUEST_MAC,
    GUEST_NODE,
    HOT_DISK,
    HOT_IP,
    HOT_MAC,
    MIGRATION_PARAMS,
    TARGET_NODE,
    Step,
    Tour,
    step,
)


def build_guest() -> testguest.GuestImage:
    """``corral testguest build``, before any namespace exists (its failure costs nothing)."""
    print("\n# The test guest: a tiny Linux (Debian's cloud kernel, a busybox initramfs)")
    print("[host]$ corral testguest build")
    was_cached = testguest.cached() is not None
    started = time.monotonic()
    image = testguest.build()
    print(f"kernel  {image.kernel}\ninitrd  {image.initrd}\nversion {image.kernel_version}")
    how = "cached" if was_cached else "built now, cached for next time"
    print(f"   ({how}, {time.monotonic() - started:.1f}s)")
    return image


def enable_kvm(tour: Tour, image: testguest.GuestImage) -> bool:
    tour.section("Enable KVM, booting the test guest's kernel and initramfs directly")
    tour.note(
        "kvm_flag=disabled runs QEMU under TCG: /dev/kvm on this machine is a software "
        "layer that cannot boot Linux (see TESTGUEST.md); real hosts keep KVM"
    )
    return tour.run(step(*image.enable_kvm_argv()))


def add_guest(tour: Tour) -> bool:
    """Create web1 and wait until the guest reports its NIC; False if it never does."""
    node = tour.vc.node(GUEST_NODE)
    # The guest sets an address on every NIC whose MAC has one here, also on
    # NICs hot-added later.
    kargs = " ".join(
        ["quiet"] + [f"corral.ip.{m.replace(':', '')}={ip}/24" for m, ip in GUEST_ADDRESSES]
    )
    ok = tour.run(
        step(
            "gnt-instance",
            "add",
            "-t",
            "sharedfile",
            "--disk",
            "0:size=64M",
            "-B",
            "memory=128M",
            "-o",
            "noop",
            "-n",
            GUEST_NODE,
            "--net",
            f"0:link=br0,mac={GUEST_MAC}",
            "-H",
            f"kvm:kernel_args={kargs},{MIGRATION_PARAMS}",
            GUEST,
            title=f"Create {GUEST} on {GUEST_NODE}: a real VM that sets {GUEST_IP} on the NIC "
            "with its MAC (kernel argument corral.ip.<mac>); its disk is a sharedfile, the same "
            "file on every node (a shared directory), so it can live-migrate",
            timeout=300,
        )
    )
    if not ok:
        tour.time(f"create {GUEST} (gnt-instance add)", None)
        return False
    tour.time(f"create {GUEST} (gnt-instance add)", tour.last_took, "disk created, QEMU started")
    started = time.monotonic()
    tour.section(f"The guest reports on its serial console ({dt.console_log(node, GUEST)}):")
    seen = dt.wait_report(node, GUEST, dt.devices_with(GUEST_MAC), timeout=BOOT_TIMEOUT)
    if seen is None:
        tour.fail(
            f"no DEVICES line in {BOOT_TIMEOUT:.0f}s; console:\n{dt.console_tail(node, GUEST)}"
        )
        tour.time(f"{GUEST} boots (to its first report)", None)
        return False
    for rep in seen:
        print(f"   {rep.raw}")
    took = time.monotonic() - started
    tour.time(f"{GUEST} boots (to its first report)", took, "after the add returned; TCG")
    tour.note(f"(first DEVICES report {took:.1f}s after the add returned)")
    return True


def show_guest(tour: Tour, client_ns: str) -> None:
    tour.run_all(
        [
            step(
                "gnt-instance",
                "list",
                "-o",
                "name,hypervisor,pnode,status,oper_ram,oper_vcpus,nic.macs",
                title="The instance as the cluster sees it (oper_ram: memory of the running VM)",
            ),
            step("gnt-instance", "info", GUEST, show=dt.shorten_info),
        ]
    )
    ping(
        tour,
        client_ns,
        f"A client on {CLIENT_NODE}'s br0 ({CLIENT_IP}) pings {GUEST} on {tour.guest_node} "
        "across the VM network",
    )


def ping(tour: Tour, client_ns: str, title: str, address: str = GUEST_IP) -> None:
    tour.section(title)
    argv = ["ip", "netns", "exec", client_ns, "ping", "-c", "3", address]
    answered = dt.wait_answers(client_ns, address)
    tour.host(argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    print(r.stdout + r.stderr, end="")
    if not answered or r.returncode != 0:
        tour.fail(f"{address} does not answer ping (exit {r.returncode})")


def confirm(
    tour: Tour,
    offset: int,
    done: Callable[[testguest.ConsoleLine], bool],
    started: float,
) -> float | None:
    """Wait for the guest's report ``done`` accepts (on the node it runs on now),
    print it; seconds since ``started``, or None if it never came."""
    node = tour.vc.node(tour.guest_node)
    seen = dt.wait_report(node, GUEST, done, offset=offset, timeout=60)
    if seen is None:
        tour.fail(f"the guest did not report it; console:\n{dt.console_tail(node, GUEST)}")
        return None
    took = time.monotonic() - started
    print(f"   console of {GUEST} on {node.name} ({took * 1000:.0f} ms after the command started):")
    print(f"   {seen[-1].raw}")
    return took


def hot_change(
    tour: Tour, label: str, s: Step, done: Callable[[testguest.ConsoleLine], bool]
) -> bool:
    """Run ``s`` (a modify of the running web1) and wait for the guest to report it."""
    offset = dt.log_size(tour.vc.node(tour.guest_node), GUEST)
    started = time.monotonic()
    seen = confirm(tour, offset, done, started) if tour.run(s) else None
    cmd = f"command {tour.last_took * 1000:.0f} ms"
    tour.time(f"{label} on {tour.guest_node} (until the guest reports it)", seen, cmd)
    return seen is not None


def hotplug(tour: Tour, client_ns: str) -> bool:
    """Hot-add a NIC (pinged on its own address) and a disk; True if the NIC is in."""
    nic = hot_change(
        tour,
        "hot-add NIC",
        step(
            "gnt-instance",
            "modify",
            "--net",
            f"add:mac={HOT_MAC},link=br0",
            GUEST,
            title=f"Hot-add a NIC to the running {GUEST} (QMP, no restart); the guest reports "
            f"it and sets {HOT_IP} on it",
        ),
        dt.devices_with(HOT_MAC),
    )
    if nic:
        ping(tour, client_ns, f"The new NIC answers on {HOT_IP}", HOT_IP)
    hot_change(
        tour,
        "hot-add disk",
        step(
            "gnt-instance",
            "modify",
            "--disk",
            f"add:size={HOT_DISK}",
            GUEST,
            title=f"Hot-add a {HOT_DISK} disk (a new file in the shared directory); the guest "
            "reports a second disk (name/serial/sectors)",
        ),
        dt.devices_with_disks(2),
    )
    return nic


def migrate(tour: Tour, client_ns: str) -> bool:
    """Live-migrate web1 to node2 with a ping every 10 ms; True if it moved."""
    tour.section(
        f"Live-migrate {GUEST} from {tour.guest_node} to {TARGET_NODE} while the client pings "
        f"it every 10 ms ({MIGRATION_PARAMS.replace(',', ', ')})"
    )
    tour.host(["ip", "netns", "exec", client_ns, "ping", "-i", "0.01", GUEST_IP, "&"])
    pinger = dt.Pinger(client_ns, GUEST_IP, 0.01)
    ok = False
    start = end = 0.0
    try:
        if not pinger.wait_reply(0.0, 30.0):
            tour.fail(f"{GUEST_IP} does not answer before the migration")
        time.sleep(0.3)
        start = time.time()
        ok = tour.run(step("gnt-instance", "migrate", "-f", GUEST, timeout=300))
        end = time.time()
        if not pinger.wait_reply(end, 10.0):
            tour.fail(f"{GUEST_IP} does not answer after the migration")
    finally:
        pinger.stop()
    lost = pinger.lost(start, end) if ok else None
    downtime = dt.migration_downtime(tour.last_output) if ok else None
    tour.note(
        f"ping: {pinger.answered} answered; {'?' if lost is None else lost} lost while "
        f"{GUEST} moved (one request every 10 ms); QEMU's downtime {downtime} ms"
    )
    if ok:
        tour.guest_node = TARGET_NODE
    tour.time(
        f"live migration {GUEST_NODE} -> {TARGET_NODE} (gnt-instance migrate)",
        tour.last_took if ok else None,
        f"{lost} pings lost at 10 ms, QEMU downtime {downtime} ms" if ok else "",
    )
    tour.run(
        step(
            "gnt-instance",
            "list",
            "-o",
            "name,pnode,status,nic.macs,disk.sizes",
            GUEST,
            title=f"{GUEST} now runs on {tour.guest_node}, with both NICs and both disks",
        )
    )
    return ok


def hot_remove(tour: Tour) -> None:
    hot_change(
        tour,
        "hot-remove NIC",
        step(
            "gnt-instance",
            "modify",
            "-f",
            "--net",
            "1:remove",
            GUEST,
            title=f"Hot-remove the added NIC: the guest, now on {tour.guest_node}, sees it go "
            f"(the report is on {tour.guest_node}'s console log)",
        ),
        dt.devices_without(HOT_MAC),
    )


def guest_lifecycle(tour: Tour) -> None:
    """Reboot and shut down web1, showing what the guest itself printed."""
    node = tour.vc.node(tour.guest_node)
    off = dt.log_size(node, GUEST)
    with tour.timed(f"soft reboot of {GUEST} (until it reports again)"):
        if tour.run(
            step(
                "gnt-instance",
                "reboot",
                GUEST,
                title=f"A soft reboot: ACPI power button, the guest powers off, {node.name} "
                "starts it again",
                timeout=300,
            )
        ):
            show_console(tour, node, off, dt.devices_with(GUEST_MAC), after=dt.is_boot)
    off = dt.log_size(node, GUEST)
    with tour.timed(f"shutdown of {GUEST}"):
        if tour.run(step("gnt-instance", "shutdown", GUEST, title="Shut it down", timeout=300)):
            show_console(tour, node, off, dt.is_poweroff)
    tour.run(step("gnt-instance", "list", "-o", "name,pnode,status,oper_ram", GUEST))


def show_console(
    tour: Tour,
    node: vcl.VNode,
    offset: int,
    done: Callable[[testguest.ConsoleLine], bool],
    after: Callable[[testguest.ConsoleLine], bool] | None = None,
) -> None:
    seen = dt.wait_report(node, GUEST, done, offset=offset, timeout=BOOT_TIMEOUT, after=after)
    if seen is None:
        tour.fail(f"the guest did not report; console:\n{dt.console_tail(node, GUEST)}")
        return
    print(f"   console of {GUEST}:")
    for rep in seen:
        print(f"   {rep.raw}")
