"""Real KVM instances (QEMU under TCG) in a one-node TempCluster, without NICs.

What an admin observes: ``gnt-*`` exit codes and messages, ``gnt-instance
list``/``info``, the guest's own reports on its serial console, QEMU's
processes, files and sockets on the node, a VNC viewer's login. Networking
is covered by ``tests/system/test_kvm_vcluster.py``; here no instance has a
NIC, so the host's network namespace never gets a tap or a bridge.

One cluster serves the whole module (each TCG boot costs seconds): every
test removes the instances it made.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator

import pytest

from corral import testguest
from corral.hypervisor.kvm.model import disk_serial
from corral.hypervisor.kvm.params import KvmHvParams
from corral.testing.cluster import BIN, TempCluster
from tests.integration import kvmhelp as kh

KVM_PATH = KvmHvParams().kvm_path
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (taps, -runas, chroot)"),
    pytest.mark.skipif(not os.access(KVM_PATH, os.X_OK), reason=f"QEMU ({KVM_PATH}) not installed"),
]

RUN = "cx" + secrets.token_hex(2)  # names this run creates on the host
NO_BRIDGE = f"{RUN}nobr"
NO_USER = f"{RUN}nouser"
TAKEN_MAC = "aa:00:00:c0:ff:01"
VNC_PASSWORD = "Vnc-pw42"  # VNC uses the first 8 bytes only
FILE_DISK = ("-t", "file", "--disk", "0:size=16M")


@pytest.fixture(scope="module")
def guest() -> testguest.GuestImage:
    return testguest.build()


@pytest.fixture(scope="module")
def kc(guest: testguest.GuestImage) -> Iterator[TempCluster]:
    with TempCluster(prefix=f"{RUN}-") as c:
        kh.configure_kvm(c, guest)
        try:
            yield c
        finally:
            # Instances a failed test left behind: stop their QEMUs through the cluster,
            # then (last resort) by pid, so no QEMU outlives the cluster's root.
            with contextlib.suppress(AssertionError):  # the master may be what failed
                for name in kh.statuses(c):
                    c.run("gnt-instance", "remove", "-f", "--shutdown-timeout=0", name)
            for pid in kh.qemu_pids(c):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def add(c: TempCluster, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``gnt-instance add`` (without NICs unless ``--net`` is given); kvm is the default."""
    nics = [] if "--net" in args else ["--no-nics"]
    return c.run("gnt-instance", "add", *nics, "-B", "memory=128M", *args, name)


def remove(c: TempCluster, name: str) -> None:
    c.run("gnt-instance", "remove", "-f", name, check=True)
    assert name not in kh.statuses(c)
    assert kh.instance_run_files(c, name) == []


# --- 1. bad input leaves nothing behind ----------------------------------------------------------

# (id, arguments of `gnt-instance add`, fragments of the Failure line)
BAD_ADD: list[tuple[str, list[str], list[str]]] = [
    ("unknown-param", [*FILE_DISK, "-H", "kvm:nosuch=1"], ["hvparams/nosuch", "unknown"]),
    (
        "wrong-type",
        [*FILE_DISK, "-H", "kvm:kvm_pci_reservations=x"],
        ["hvparams/kvm_pci_reservations", "'x'"],
    ),
    (
        "missing-kernel",
        [*FILE_DISK, "-H", "kvm:kernel_path=/nonexistent/vmlinux"],
        ["kernel /nonexistent/vmlinux does not exist"],
    ),
    (
        "mac-in-use",
        [*FILE_DISK, "--net", f"0:mac={TAKEN_MAC},link={NO_BRIDGE}"],
        [TAKEN_MAC, "already in use"],
    ),
    ("missing-bridge", [*FILE_DISK, "--net", f"0:link={NO_BRIDGE}"], [NO_BRIDGE, "do not exist"]),
    ("size-not-a-size", ["-t", "file", "--disk", "0:size=lots"], ["disks[0].size", "'lots'"]),
    (
        "qemu-binary-missing",
        [*FILE_DISK, "-H", "kvm:kvm_path=/nonexistent/kvm"],
        ["QEMU binary /nonexistent/kvm", "missing"],
    ),
    (
        "qemu-rejects-option",
        [*FILE_DISK, "-H", "kvm:kvm_extra=-no-such-option"],
        ["could not be started", "creation undone", "-no-such-option"],
    ),
    (
        "unknown-machine-type",
        [*FILE_DISK, "-H", "kvm:machine_version=pc-nosuch"],
        ["creation undone", "'pc-nosuch'", "not supported"],
    ),
    (
        "user-model-without-domain",
        [*FILE_DISK, "-H", "kvm:security_model=user"],
        ["security_domain", "security_model=user needs"],
    ),
    (
        "unknown-user",
        [*FILE_DISK, "-H", f"kvm:security_model=user,security_domain={NO_USER}"],
        [f"user '{NO_USER}' does not exist"],
    ),
    (
        "vnc-password-file-missing",
        [*FILE_DISK, "-H", "kvm:vnc_bind_address=127.0.0.1,vnc_password_file=/nonexistent/vncpw"],
        ["VNC password file /nonexistent/vncpw does not exist"],
    ),
]


@pytest.fixture(scope="module")
def mac_owner(kc: TempCluster) -> Iterator[str]:
    """A stopped fake-hypervisor instance holding TAKEN_MAC (fake plugs no tap anywhere)."""
    kc.run(
        "gnt-instance",
        "add",
        "-H",
        "fake",
        "--no-start",
        "--net",
        f"0:mac={TAKEN_MAC}",
        "macowner",
        check=True,
    )
    yield "macowner"
    kc.run("gnt-instance", "remove", "-f", "macowner", check=True)


@pytest.mark.parametrize(
    ("args", "fragments"), [c[1:] for c in BAD_ADD], ids=[c[0] for c in BAD_ADD]
)
def test_bad_add_leaves_nothing_behind(
    kc: TempCluster, mac_owner: str, args: list[str], fragments: list[str]
) -> None:
    assert NO_BRIDGE not in kh.host_links(("bridge",))
    with pytest.raises(KeyError):
        pwd.getpwnam(NO_USER)
    storage = kc.paths.file_storage_dir
    before = (kh.tree(storage), kh.run_files(kc), kh.qemu_pids(kc), kh.host_links())

    r = add(kc, "bad1", *args)
    if r.returncode == 0:
        kc.run("gnt-instance", "remove", "-f", "bad1")
    assert r.returncode != 0, r.stdout
    failure = r.stderr.strip().splitlines()[-1]
    assert failure.startswith("Failure: "), r.stderr
    for fragment in fragments:
        assert fragment in failure, failure

    assert "bad1" not in kh.statuses(kc)
    assert kh.tree(storage) == before[0]  # no image, no instance directory
    assert kh.run_files(kc) == before[1]  # no pid, socket, runtime, nic or chroot entry
    assert kh.qemu_pids(kc) <= before[2]  # no QEMU left running
    assert kh.host_links() - before[3] == set()  # no new tap or bridge on the host


# --- 6. parameter checks on the master ---------------------------------------------------------


def test_master_refuses_bad_hypervisor_parameters(kc: TempCluster) -> None:
    serial = kc.config()["serial_no"]
    for args, fragments in (
        (["-H", "kvm:nic_type=bogus"], ["hvparams/kvm/nic_type", "'bogus'"]),
        # Cross-field checks run on the cluster's values too (it has an initrd).
        (["-H", "kvm:kernel_path="], ["initrd_path needs kernel_path"]),
        (["-H", "kvm:security_model=user"], ["security_model=user needs a security_domain"]),
    ):
        r = kc.run("gnt-cluster", "modify", *args)
        assert r.returncode != 0, (args, r.stdout)
        for fragment in fragments:
            assert fragment in r.stderr, (args, r.stderr)
    assert kc.config()["serial_no"] == serial

    r = add(kc, "xfield1", "-t", "diskless", "-H", "kvm:kernel_path=,initrd_path=/boot/initrd")
    assert r.returncode != 0
    assert "hvparams/initrd_path: initrd_path needs kernel_path" in r.stderr
    assert "xfield1" not in kh.statuses(kc)
    assert kc.config()["serial_no"] == serial


# --- 2. VNC with a per-instance password file; 5. the serial console ---------------------------


@pytest.fixture(scope="module")
def vnc_inst(kc: TempCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pwfile = tmp_path_factory.mktemp("vnc") / "password"
    pwfile.write_text(f"{VNC_PASSWORD}\nthe second line is not the password\n")
    pwfile.chmod(0o600)
    r = add(
        kc,
        "vnc1",
        "-t",
        "diskless",
        "-H",
        f"kvm:vnc_bind_address=127.0.0.1,vnc_password_file={pwfile}",
    )
    assert r.returncode == 0, r.stderr
    yield "vnc1"
    remove(kc, "vnc1")


def test_vnc_password_from_file(kc: TempCluster, vnc_inst: str) -> None:
    text = kh.info(kc, vnc_inst)
    m = re.search(r"Allocated network port: (\d+)", text)
    assert m is not None, text
    port = int(m.group(1))
    assert f"console connection: vnc to 127.0.0.1:{port} (display {port - 5900})" in text

    ok = kh.vnc_authenticate("127.0.0.1", port, VNC_PASSWORD)
    assert ok.version == b"RFB 003.008\n"
    assert ok.security_types == [2]  # VNC authentication only: no "None" type
    assert ok.result == 0

    bad = kh.vnc_authenticate("127.0.0.1", port, "wrong-pw")
    assert bad.result != 0
    assert "failed" in bad.reason.lower()


def test_serial_console(kc: TempCluster, vnc_inst: str) -> None:
    r = kc.run("gnt-instance", "console", "--show-cmd", vnc_inst, check=True)
    assert f"gnt-instance console {vnc_inst}" in r.stdout
    assert f"/console/{vnc_inst}" in r.stdout and "node1" in r.stdout

    # Attach with stdin from a pipe; a hard reboot makes the guest print its boot report.
    con = subprocess.Popen(
        [str(BIN / "gnt-instance"), "console", vnc_inst],
        env=kc.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        kh.wait_serial_client(kc, vnc_inst)
        kc.run("gnt-instance", "reboot", "--type=hard", vnc_inst, check=True)
        m, seen = kh.read_until(
            con.stdout, re.compile(r"^DEVICES .* up=[0-9.]+\r?\n", re.M), timeout=90
        )
        assert m is not None, f"no DEVICES line on the console; got {seen!r}"
        # a whole line (the regex needs its end): a chunk may end mid-line
        assert kh.devices_lines(m.group(0)) != []
    finally:
        con.terminate()
        con.wait(timeout=30)

    kc.run("gnt-instance", "add", "--no-nics", "-t", "diskless", "--no-start", "down1", check=True)
    try:
        r = kc.run("gnt-instance", "console", "down1")
        assert r.returncode != 0
        assert "down1 is not marked to be up" in r.stderr
    finally:
        remove(kc, "down1")


# --- 3. unprivileged, chrooted QEMU -----------------------------------------------------------


def test_unprivileged_chrooted_qemu(kc: TempCluster) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    r = add(
        kc,
        "priv1",
        *FILE_DISK,
        "-H",
        "kvm:security_model=user,security_domain=nobody,use_chroot=true",
    )
    assert r.returncode == 0, r.stderr
    line = kh.wait_devices(kc, "priv1")
    (disk,) = kh.disk_uuids(kc, "priv1")
    # The guest sees the disk QEMU never opened itself (it runs as nobody): an fd passed in.
    assert [(b.name, b.serial) for b in line.blk] == [("vda", disk_serial(disk))]

    pid = kh.running_pid(kc, "priv1")
    assert kh.proc_uids(pid) == [nobody] * 4
    chroot = kc.paths.hv_run_dir("kvm") / "chroot" / "priv1"
    assert os.readlink(f"/proc/{pid}/root") == str(chroot)

    offset = kh.log_size(kc, "priv1")
    kc.run("gnt-instance", "shutdown", "priv1", check=True)
    assert "POWEROFF" in kh.console_text(kc, "priv1", offset)  # ACPI, not a kill
    assert pid not in kh.qemu_pids(kc)
    assert kh.instance_run_files(kc, "priv1") == []
    assert not chroot.exists()
    assert kh.statuses(kc)["priv1"] == "ADMIN_down"
    remove(kc, "priv1")


# --- 4. shutdowns from inside the guest --------------------------------------------------------


def test_power_off_inside_the_guest_is_a_user_shutdown(kc: TempCluster) -> None:
    r = add(kc, "usr1", "-t", "diskless")
    assert r.returncode == 0, r.stderr
    kh.wait_devices(kc, "usr1")
    pid = kh.running_pid(kc, "usr1")

    offset = kh.log_size(kc, "usr1")
    kh.monitor_command(kc, "usr1", "system_powerdown")  # the admin's own monitor, not Corral
    kh.wait_status(kc, "usr1", "USER_down")
    assert "POWEROFF" in kh.console_text(kc, "usr1", offset)
    assert pid not in kh.qemu_pids(kc)
    r = kc.run("gnt-instance", "console", "usr1")
    assert r.returncode != 0 and "usr1 is not running" in r.stderr

    offset = kh.log_size(kc, "usr1")
    kc.run("gnt-instance", "startup", "usr1", check=True)
    assert kh.statuses(kc)["usr1"] == "running"
    kh.wait_devices(kc, "usr1", offset)
    remove(kc, "usr1")


def test_reboot_behavior_exit(kc: TempCluster) -> None:
    r = add(kc, "rbx1", "-t", "diskless", "--no-start", "-H", "kvm:reboot_behavior=exit")
    assert r.returncode == 0, r.stderr
    # A guest whose init is `reboot -f`: the reboot comes from inside the guest
    # (QEMU's reset cause "guest-reset"), which reboot_behavior=exit turns into a stop.
    kc.run(
        "gnt-instance",
        "startup",
        "-H",
        "kernel_args=quiet rdinit=/bin/busybox -- reboot -f",
        "rbx1",
        check=True,
    )
    kh.wait_status(kc, "rbx1", "USER_down")
    assert kh.qemu_pids(kc, "rbx1") == set()
    assert kh.instance_run_files(kc, "rbx1") == ["ctrl/rbx1.shutdown"]

    # The admin's hard reboot is not the guest's: the instance must come back up.
    kc.run("gnt-instance", "startup", "rbx1", check=True)
    kh.wait_devices(kc, "rbx1")
    offset = kh.log_size(kc, "rbx1")
    kc.run("gnt-instance", "reboot", "--type=hard", "rbx1", check=True)
    kh.wait_devices(kc, "rbx1", offset, timeout=60)
    assert kh.statuses(kc)["rbx1"] == "running"
    assert "ctrl/rbx1.shutdown" not in kh.instance_run_files(kc, "rbx1")
    remove(kc, "rbx1")
