"""Live device changes, the pure decisions: what can change live, which slot, which ids.

The QMP replies below are trimmed copies of what QEMU 7.2 (Debian 12) answered
on this machine for ``-machine pc`` with a virtio disk at 0xc, a virtio NIC at
0xd, a balloon at 0x3 and a pci-bridge at 0x1e (with a NIC behind it).
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.errors import ECode, HotplugError
from corral.hypervisor.kvm import hotplan
from corral.hypervisor.kvm.model import PCI_SLOTS, HvInfo, device_id
from corral.hypervisor.kvm.params import KvmHvParams
from corral.hypervisor.kvm.runtime import BlockDevice, KvmRuntime, RuntimeDisk, RuntimeNic

NIC_UUID = "5f2b0c3e-1111-2222-3333-444455556666"
DISK_UUID = "932df160-7a22-4067-a566-7e0ca8386133"
NIC_ID = device_id("nic", NIC_UUID)  # "nic-5f2b0c3e-1111-2222"
DISK_ID = device_id("disk", DISK_UUID)

ALL_COMMANDS = sorted({c for needed in hotplan.NEEDED_COMMANDS.values() for c in needed})
ALL_KEYS = set(hotplan.NEEDED_COMMANDS)


def _argv(machine: str = "pc-i440fx-7.2,accel=kvm", name: str = "inst1") -> list[str]:
    return ["/usr/bin/kvm", "-name", name, "-m", "128", "-machine", machine, "-daemonize"]


def _nic(uuid: str, slot: int) -> RuntimeNic:
    info = HvInfo(driver="virtio-net-pci", id=device_id("nic", uuid), bus="pci.0", addr=hex(slot))
    return RuntimeNic(mac="aa:00:00:11:22:33", uuid=uuid, hvinfo=info)


def _disk(uuid: str, info: HvInfo) -> BlockDevice:
    return BlockDevice(RuntimeDisk(dev_type="file", uuid=uuid, hvinfo=info), f"/x/{uuid}.img")


def _pci_disk(uuid: str, slot: int) -> BlockDevice:
    return _disk(
        uuid,
        HvInfo(driver="virtio-blk-pci", id=device_id("disk", uuid), bus="pci.0", addr=hex(slot)),
    )


def _scsi_disk(uuid: str, target: int) -> BlockDevice:
    info = HvInfo(
        driver="scsi-hd", id=device_id("disk", uuid), bus="scsi.0", channel=0, scsi_id=target, lun=0
    )
    return _disk(uuid, info)


def _rt(
    nics: list[RuntimeNic] | None = None,
    disks: list[BlockDevice] | None = None,
    argv: list[str] | None = None,
) -> KvmRuntime:
    return KvmRuntime(
        kvm_cmd=argv or _argv(),
        nics=[_nic(NIC_UUID, 0xD)] if nics is None else nics,
        hvparams={},
        disks=[_pci_disk(DISK_UUID, 0xC)] if disks is None else disks,
    )


def _uuid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def _limits(lims: list[Any]) -> dict[tuple[str, str], str]:
    return {(lim.action, lim.dev_type): lim.reason for lim in lims}


# --- limits ----------------------------------------------------------------------------


def test_everything_live_on_i440fx_with_virtio() -> None:
    assert hotplan.limits(_rt(), KvmHvParams(), ALL_COMMANDS) == []
    # check_supported agrees: no change is refused.
    for action, kind in ALL_KEYS:
        hotplan.check_supported(_rt(), KvmHvParams(), ALL_COMMANDS, action, kind)


def test_missing_qmp_commands_are_named() -> None:
    have = [c for c in ALL_COMMANDS if c not in ("blockdev-add", "getfd")]
    got = _limits(hotplan.limits(_rt(), KvmHvParams(), have))
    assert set(got) == {("hotadd", "nic"), ("hotmod", "nic"), ("hotadd", "disk")}
    assert got[("hotadd", "nic")] == "this QEMU lacks the QMP command(s) getfd"
    assert got[("hotadd", "disk")] == "this QEMU lacks the QMP command(s) blockdev-add"
    # Removals need neither, so they stay live.
    assert ("hotremove", "nic") not in got and ("hotremove", "disk") not in got


def test_missing_commands_listed_in_order_and_refused() -> None:
    got = _limits(hotplan.limits(_rt(), KvmHvParams(), []))
    assert set(got) == ALL_KEYS
    assert got[("hotremove", "disk")] == (
        "this QEMU lacks the QMP command(s) device_del, blockdev-del, remove-fd, qom-list"
    )
    with pytest.raises(HotplugError, match="cannot remove a disk live: this QEMU lacks") as ei:
        hotplan.check_supported(_rt(), KvmHvParams(), [], "hotremove", "disk")
    assert ei.value.code is ECode.STATE


@pytest.mark.parametrize("machine", ["pc-q35-7.2,accel=kvm", "q35,accel=tcg", "type=q35"])
def test_q35_refuses_adds_not_removals(machine: str) -> None:
    rt = _rt(argv=_argv(machine))
    got = _limits(hotplan.limits(rt, KvmHvParams(), ALL_COMMANDS))
    assert set(got) == {("hotadd", "nic"), ("hotmod", "nic"), ("hotadd", "disk")}
    mtype = machine.split(",")[0].removeprefix("type=")
    assert got[("hotadd", "nic")] == f"machine type {mtype} has no hotpluggable slots on pci.0"


def test_instance_named_like_q35_is_not_a_q35_machine() -> None:
    rt = _rt(argv=_argv(name="q35-web"))
    assert hotplan.limits(rt, KvmHvParams(), ALL_COMMANDS) == []


def test_machine_type_of_argv() -> None:
    assert hotplan.machine_type(_argv("pc-i440fx-7.2,accel=kvm,acpi=off")) == "pc-i440fx-7.2"
    assert hotplan.machine_type(["kvm", "-M", "accel=tcg,type=q35"]) == "q35"
    assert hotplan.machine_type(["kvm", "-name", "x"]) == ""


def test_ide_disks_cannot_be_plugged_or_unplugged() -> None:
    # QEMU 7.2: device_del of an ide-hd → "Bus 'ide.0' does not support hotplugging".
    got = _limits(hotplan.limits(_rt(), KvmHvParams(disk_type="ide"), ALL_COMMANDS))
    assert got == {
        ("hotadd", "disk"): "disk model ide is not hotpluggable",
        ("hotremove", "disk"): "disk model ide is not hotpluggable",
    }


def test_scsi_hd_needs_the_controller_started_with_the_instance() -> None:
    hv = KvmHvParams(disk_type="scsi-hd")
    got = _limits(hotplan.limits(_rt(), hv, ALL_COMMANDS))
    assert got == {
        ("hotadd", "disk"): "the instance was started without a SCSI controller (no SCSI disk)"
    }
    with_scsi = _rt(disks=[_scsi_disk(DISK_UUID, 0)])
    assert hotplan.limits(with_scsi, hv, ALL_COMMANDS) == []


def test_non_virtio_nics_are_hotpluggable() -> None:
    assert hotplan.limits(_rt(), KvmHvParams(nic_type="e1000"), ALL_COMMANDS) == []


# --- slots -----------------------------------------------------------------------------

# query-pci, -machine pc, as QEMU 7.2 answers (fields the planner does not read dropped).
QUERY_PCI: list[dict[str, Any]] = [
    {
        "bus": 0,
        "devices": [
            {"bus": 0, "slot": 0, "function": 0, "qdev_id": "", "class_info": {"class": 1536}},
            {"bus": 0, "slot": 1, "function": 0, "qdev_id": "", "class_info": {"class": 1537}},
            {"bus": 0, "slot": 1, "function": 1, "qdev_id": "", "class_info": {"class": 257}},
            {"bus": 0, "slot": 1, "function": 3, "qdev_id": "", "class_info": {"class": 1664}},
            {"bus": 0, "slot": 3, "function": 0, "qdev_id": "balloon", "class_info": {}},
            {"bus": 0, "slot": 12, "function": 0, "qdev_id": DISK_ID, "class_info": {}},
            {"bus": 0, "slot": 13, "function": 0, "qdev_id": NIC_ID, "class_info": {}},
            {
                "bus": 0,
                "slot": 30,
                "function": 0,
                "qdev_id": "br1",
                "class_info": {"class": 1540, "desc": "PCI bridge"},
                "pci_bridge": {
                    "bus": {"number": 1, "secondary": 1, "subordinate": 1},
                    # Behind the bridge: slot 2 of bus 1, not of pci.0.
                    "devices": [{"bus": 1, "slot": 2, "function": 0, "qdev_id": "byhand"}],
                },
            },
        ],
    }
]


def test_qemu_pci_slots_of_a_real_reply() -> None:
    assert hotplan.qemu_pci_slots(QUERY_PCI) == {0, 1, 3, 12, 13, 30}


def test_qemu_pci_slots_ignores_other_buses_and_junk() -> None:
    other = [{"bus": 1, "devices": [{"slot": 7}]}, "junk", {"devices": [{"slot": "x"}, 5]}]
    assert hotplan.qemu_pci_slots(other) == set()
    assert hotplan.qemu_pci_slots({"error": "x"}) == set()
    assert hotplan.qemu_pci_slots(None) == set()


def test_free_slot_skips_reservations_runtime_and_qemu_slots() -> None:
    rt = _rt()  # runtime file: disk at 0xc, NIC at 0xd
    assert hotplan.free_slot(12, rt, set()) == 14
    # A device QEMU has at 14 that the runtime file does not know is never collided with.
    assert hotplan.free_slot(12, rt, {14, 15}) == 16
    # A slot the runtime file records is taken even if QEMU does not report it (yet).
    rt2 = _rt(nics=[_nic(NIC_UUID, 0xD), _nic(_uuid(2), 0xE)])
    assert hotplan.free_slot(12, rt2, hotplan.qemu_pci_slots(QUERY_PCI)) == 15
    # Fewer reservations open the low slots, but not those QEMU's own devices hold.
    assert hotplan.free_slot(5, rt, hotplan.qemu_pci_slots(QUERY_PCI)) == 5
    assert hotplan.free_slot(2, _rt(nics=[], disks=[]), {0, 1, 3}) == 2


def test_no_free_slot_names_who_holds_them() -> None:
    recorded = [_nic(_uuid(i), slot) for i, slot in enumerate(range(12, 22))]  # 10 slots
    rt = _rt(nics=recorded, disks=[])
    qemu = set(range(12)) | set(range(12, 22)) | set(range(22, PCI_SLOTS))  # 10 unrecorded
    with pytest.raises(HotplugError) as ei:
        hotplan.free_slot(12, rt, qemu)
    assert ei.value.code is ECode.NORES
    assert str(ei.value) == (
        "no free PCI slot left on pci.0: all 32 are taken (12 reserved by "
        "kvm_pci_reservations, 10 by the instance's NICs and disks, 10 by devices the "
        "runtime file does not know); remove a device first"
    )


def test_no_free_slot_without_unrecorded_devices() -> None:
    recorded = [_nic(_uuid(i), slot) for i, slot in enumerate(range(5, PCI_SLOTS))]
    with pytest.raises(HotplugError) as ei:
        hotplan.free_slot(5, _rt(nics=recorded, disks=[]), set(range(5)))
    assert "(5 reserved by kvm_pci_reservations, 27 by the instance's NICs and disks)" in str(
        ei.value
    )
    assert "runtime file does not know" not in str(ei.value)


def test_new_hvinfos() -> None:
    hv = KvmHvParams(nic_type="e1000")
    nic = hotplan.new_nic_hvinfo(hv, _uuid(7), 14)
    assert nic == HvInfo(driver="e1000", id=device_id("nic", _uuid(7)), bus="pci.0", addr="0xe")
    disk = hotplan.new_disk_hvinfo(KvmHvParams(), _uuid(8), _rt(), 15)
    assert (disk.driver, disk.bus, disk.slot) == ("virtio-blk-pci", "pci.0", 15)
    with pytest.raises(HotplugError, match="no PCI slot chosen"):
        hotplan.new_disk_hvinfo(KvmHvParams(), _uuid(8), _rt(), None)


def test_new_scsi_disk_takes_the_first_free_target() -> None:
    hv = KvmHvParams(disk_type="scsi-hd")
    rt = _rt(disks=[_scsi_disk(_uuid(0), 0), _scsi_disk(_uuid(1), 2)])
    info = hotplan.new_disk_hvinfo(hv, _uuid(9), rt, None)
    assert (info.bus, info.scsi_id, info.lun, info.addr) == ("scsi.0", 1, 0, None)
    full = _rt(disks=[_scsi_disk(_uuid(i), i) for i in range(hotplan.SCSI_TARGETS)])
    with pytest.raises(HotplugError, match="no free SCSI target") as ei:
        hotplan.new_disk_hvinfo(hv, _uuid(9), full, None)
    assert ei.value.code is ECode.NORES


# --- device ids ------------------------------------------------------------------------

# qom-list /machine/peripheral, same machine as QUERY_PCI.
QOM_LIST = [
    {"name": "type", "type": "string"},
    {"name": "byhand", "type": "child<e1000>"},
    {"name": "br1", "type": "child<pci-bridge>"},
    {"name": "balloon", "type": "child<virtio-balloon-pci>"},
    {"name": NIC_ID, "type": "child<virtio-net-pci>"},
    {"name": DISK_ID, "type": "child<virtio-blk-pci>"},
]


def test_peripheral_ids_of_a_real_reply() -> None:
    assert hotplan.peripheral_ids(QOM_LIST) == {"byhand", "br1", "balloon", NIC_ID, DISK_ID}
    assert hotplan.peripheral_ids({"return": []}) == set()
    assert hotplan.peripheral_ids(["x", {"name": "y", "type": "link<z>"}]) == set()


def test_unrecorded_devices_are_only_nics_and_disks() -> None:
    present = hotplan.peripheral_ids(QOM_LIST)
    assert hotplan.unrecorded_devices(_rt(), present) == []
    stray = {"nic-0badcafe-0000-4000", "hotdisk-932df160-pci-14", "disk-00000001-0000-4000"}
    assert hotplan.unrecorded_devices(_rt(), present | stray) == sorted(stray)
    # The runtime file's own devices are known; with an empty file they are drift.
    assert hotplan.unrecorded_devices(_rt(nics=[], disks=[]), present) == [DISK_ID, NIC_ID]
