"""A typed description of one QEMU machine, and device ids / slot assignment.

Layer: pure. The argv builder (:mod:`.cmdline`) and the runtime file
(:mod:`.runtime`) both work from these records, so a machine can be rebuilt
identically from its runtime file (reboot, migration target) without
replaying a frozen argv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm.params import KvmHvParams

PCI_SLOTS = 32
# Fixed slots of Corral's own devices, inside the reserved range (ARCHITECTURE.md).
SLOT_VGA = 2
SLOT_BALLOON = 3
SLOT_SCSI = 4

NIC_DRIVERS = {
    "paravirtual": "virtio-net-pci",
    "e1000": "e1000",
    "rtl8139": "rtl8139",
    "i82551": "i82551",
    "i82557b": "i82557b",
    "i82559er": "i82559er",
    "ne2k_pci": "ne2k_pci",
    "pcnet": "pcnet",
}
DISK_DRIVERS = {"paravirtual": "virtio-blk-pci", "ide": "ide-hd", "scsi-hd": "scsi-hd"}


class HvInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a device sits in QEMU (Ganeti's ``hvinfo``)."""

    driver: str
    id: str
    bus: str
    addr: str | None = None  # PCI: "0xc"
    channel: int | None = None  # SCSI
    scsi_id: int | None = msgspec.field(default=None, name="scsi-id")
    lun: int | None = None
    unit: int | None = None  # IDE

    @property
    def slot(self) -> int | None:
        return int(self.addr, 16) if self.addr is not None and self.bus == "pci.0" else None

    def device_props(self) -> dict[str, str | int]:
        """The properties ``-device`` / ``device_add`` take (Ganeti's _DEVICE_ATTRIBUTES)."""
        out: dict[str, str | int] = {"driver": self.driver, "id": self.id, "bus": self.bus}
        for k, v in (
            ("addr", self.addr),
            ("channel", self.channel),
            ("scsi-id", self.scsi_id),
            ("lun", self.lun),
            ("unit", self.unit),
        ):
            if v is not None:
                out[k] = v
        return out


def device_id(kind: Literal["nic", "disk"], uuid: str) -> str:
    """``<kind>-<first three groups of the UUID>``: unique, short, starts with a letter."""
    return f"{kind}-{uuid.rsplit('-', 2)[0]}"


def legacy_device_id(kind: str, uuid: str, slot: int) -> str:
    """Ganeti ≤ 2.15's ids (``hotdisk-932df160-pci-12``), for upgraded runtime files."""
    return f"hot{kind}-{uuid.split('-')[0]}-pci-{slot}"


@dataclass(frozen=True)
class MachineNic:
    uuid: str
    mac: str
    hvinfo: HvInfo


@dataclass(frozen=True)
class MachineDisk:
    uuid: str
    hvinfo: HvInfo
    read_only: bool = False
    serial: str = ""


@dataclass(frozen=True)
class ControlPaths:
    """Per-instance files QEMU creates or writes (ctrl sockets, pid, logs)."""

    pidfile: str
    qmp: str
    monitor: str
    serial: str
    serial_log: str
    qemu_log: str
    chroot: str


@dataclass(frozen=True)
class Machine:
    """Everything that defines the guest-visible machine and how QEMU runs it."""

    name: str
    uuid: str
    memory: int  # MiB
    vcpus: int
    hv: KvmHvParams
    machine_type: str  # pinned, e.g. "pc-i440fx-7.2"
    accel: Literal["kvm", "tcg"]
    ctl: ControlPaths
    network_port: int | None = None
    runas: str | None = None  # user QEMU drops to (security_model=user)
    nics: tuple[MachineNic, ...] = ()
    disks: tuple[MachineDisk, ...] = ()
    extra: tuple[str, ...] = field(default=())


def used_pci_slots(reservations: int, devices: list[HvInfo]) -> set[int]:
    used = set(range(reservations))
    for d in devices:
        if d.slot is not None:
            used.add(d.slot)
    return used


def free_pci_slot(used: set[int]) -> int:
    for slot in range(PCI_SLOTS):
        if slot not in used:
            used.add(slot)
            return slot
    raise HypervisorError("no free PCI slot left on pci.0 (32 slots)", ECode.NORES)


def nic_hvinfo(nic_type: str, uuid: str, used: set[int]) -> HvInfo:
    return HvInfo(
        driver=NIC_DRIVERS[nic_type],
        id=device_id("nic", uuid),
        bus="pci.0",
        addr=hex(free_pci_slot(used)),
    )


def disk_hvinfo(disk_type: str, uuid: str, index: int, used: set[int]) -> HvInfo:
    did = device_id("disk", uuid)
    if disk_type == "ide":
        if index > 3:
            raise HypervisorError("IDE takes at most 4 disks", ECode.INVAL)
        return HvInfo(driver="ide-hd", id=did, bus=f"ide.{index // 2}", unit=index % 2)
    if disk_type == "scsi-hd":
        return HvInfo(driver="scsi-hd", id=did, bus="scsi.0", channel=0, scsi_id=index, lun=0)
    return HvInfo(
        driver=DISK_DRIVERS[disk_type], id=did, bus="pci.0", addr=hex(free_pci_slot(used))
    )


def disk_serial(uuid: str) -> str:
    """A serial the guest can see (virtio allows 20 bytes): the UUID's first 20 characters."""
    return uuid[:20]
