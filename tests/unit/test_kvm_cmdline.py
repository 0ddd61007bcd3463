"""The QEMU argv is a pure function of the machine description (golden tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.errors import HypervisorError, ParameterError
from corral.hypervisor.kvm import cmdline
from corral.hypervisor.kvm.describe import initial_runtime, machine_from_runtime
from corral.hypervisor.kvm.model import ControlPaths, device_id, free_pci_slot
from corral.hypervisor.kvm.params import KVM_PARAMS
from corral.params import BeParams, NicParams
from corral.rpc.types import DiskSpec, InstanceSpec, NicSpec

GOLDEN = Path(__file__).with_name("golden")

CTL = ControlPaths(
    pidfile="/run/corral/kvm-hypervisor/pid/web1",
    qmp="/run/corral/kvm-hypervisor/ctrl/web1.qmp",
    monitor="/run/corral/kvm-hypervisor/ctrl/web1.monitor",
    serial="/run/corral/kvm-hypervisor/ctrl/web1.serial",
    serial_log="/var/log/corral/kvm/web1.console.log",
    qemu_log="/var/log/corral/kvm/web1.log",
    chroot="/run/corral/kvm-hypervisor/chroot/web1",
)


def spec(**hv: object) -> InstanceSpec:
    return InstanceSpec(
        name="web1",
        uuid="0b7c6f2e-3d1a-4c55-9e2b-6a8f1d0c9b31",
        hypervisor="kvm",
        hvparams=KVM_PARAMS.fill_dict(hv),
        beparams=BeParams(maxmem=256, minmem=256, vcpus=2),
        network_port=11003,
        disks=[
            DiskSpec(
                uuid="932df160-7a22-4067-a566-7e0ca8386133",
                index=0,
                dev_type="file",
                size=1024,
                path="/srv/corral/file-storage/x/disk0.img",
            ),
            DiskSpec(
                uuid="11111111-2222-3333-4444-555555555555",
                index=1,
                dev_type="file",
                size=64,
                mode="ro",
                path="/srv/corral/file-storage/x/disk1.img",
            ),
        ],
        nics=[
            NicSpec(
                uuid="5f2b0c3e-1111-2222-3333-444455556666",
                index=0,
                mac="aa:00:00:11:22:33",
                nicparams=NicParams(mode="bridged", link="br0"),
            ),
            NicSpec(
                uuid="6a3c1d4f-aaaa-bbbb-cccc-ddddeeeeffff",
                index=1,
                mac="aa:00:00:44:55:66",
                ip="203.0.113.7",
                nicparams=NicParams(mode="routed", link="100"),
            ),
        ],
    )


def build(**hv: object) -> list[str]:
    s = spec(**hv)
    rt = initial_runtime(s, KVM_PARAMS.fill(hv), "pc-i440fx-7.2", "tcg", CTL, None)
    m = machine_from_runtime(rt, CTL)
    return cmdline.exec_argv(
        m,
        [cmdline.NicFds(fd=20), cmdline.NicFds(fd=21, vnet_hdr=False)],
        [cmdline.DiskFd(fd=30, fdset=0), cmdline.DiskFd(fd=31, fdset=1)],
    )


def check_golden(name: str, argv: list[str]) -> None:
    path = GOLDEN / name
    expected = path.read_text().splitlines()
    assert argv == expected, "\n".join(argv)


def test_default_machine_argv_is_golden() -> None:
    check_golden(
        "kvm_argv_default.txt",
        build(
            kernel_path="/var/cache/corral/testguest/vmlinux",
            initrd_path="/var/cache/corral/testguest/initrd.img",
            kernel_args="quiet",
            root_path="",
        ),
    )


def test_vnc_chroot_user_argv_is_golden() -> None:
    check_golden(
        "kvm_argv_vnc.txt",
        build(
            vnc_bind_address="0.0.0.0",
            vnc_password_file="/etc/corral/vnc-pw",
            use_chroot=True,
            disk_type="scsi-hd",
            nic_type="e1000",
            reboot_behavior="exit",
            cpu_type="qemu64",
            kvm_flag="disabled",
        ),
    )


def test_slots_disks_first_then_nics_after_reservations() -> None:
    argv = build()
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    addrs = [d.split("addr=")[1].split(",")[0] for d in devices if "addr=" in d]
    # balloon at 0x3 (reserved), disks at 0xc and 0xd, NICs at 0xe and 0xf
    assert addrs == ["0x3", "0xc", "0xd", "0xe", "0xf"]
    assert "virtio-blk-pci,id=disk-932df160-7a22-4067,bus=pci.0,addr=0xc" in devices[1]


def test_device_ids_are_short_and_start_with_a_letter() -> None:
    did = device_id("nic", "5f2b0c3e-1111-2222-3333-444455556666")
    assert did == "nic-5f2b0c3e-1111-2222"
    assert len(did) <= 32 and did[0].isalpha()


def test_a_runtime_rebuilds_the_same_argv() -> None:
    s = spec(vnc_bind_address="127.0.0.1", kvm_flag="disabled")
    hv = KVM_PARAMS.fill({"vnc_bind_address": "127.0.0.1", "kvm_flag": "disabled"})
    rt = initial_runtime(s, hv, "pc-i440fx-7.2", "tcg", CTL, None)
    m1 = machine_from_runtime(rt, CTL)
    assert cmdline.base_argv(m1) == rt.kvm_cmd
    assert m1.network_port == 11003 and m1.memory == 256 and m1.vcpus == 2


def test_pci_slots_run_out_cleanly() -> None:
    used = set(range(32))
    with pytest.raises(HypervisorError, match="no free PCI slot"):
        free_pci_slot(used)


def test_vnc_without_port_is_an_error() -> None:
    s = spec(vnc_bind_address="127.0.0.1")
    s2 = InstanceSpec(**{**{f: getattr(s, f) for f in s.__struct_fields__}, "network_port": None})
    hv = KVM_PARAMS.fill({"vnc_bind_address": "127.0.0.1"})
    with pytest.raises(HypervisorError, match="network port"):
        initial_runtime(s2, hv, "pc-i440fx-7.2", "tcg", CTL, None)


def test_blockdev_is_json_with_an_fdset() -> None:
    argv = build()
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    assert blockdevs[0]["file"]["filename"] == "/dev/fdset/0"
    assert blockdevs[1]["read-only"] is True


@pytest.mark.parametrize(
    ("param", "value", "fragment"),
    [
        ("kvm_path", "relative/kvm", "not an absolute path"),
        ("nic_type", "virtio9", "invalid value"),
        ("kvm_pci_reservations", "40", "<= 31"),
        ("migration_caps", "xbzrle:warp", "unknown migration capability"),
        ("vnc_bind_address", "not an address!", "neither an IP"),
        ("kernel_args", "a\nb", "one line"),
    ],
)
def test_bad_parameters_are_refused_with_the_field(param: str, value: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as err:
        KVM_PARAMS.parse_text({param: value}, "hvparams")
    assert fragment in str(err.value)
    assert param in err.value.fields.get("field", "") or param in str(err.value)
