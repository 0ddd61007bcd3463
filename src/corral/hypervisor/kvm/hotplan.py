"""Pure decisions of live device changes: what can be plugged, where, and with which id.

Layer: pure. The executor (:mod:`.hotplug`) asks these functions, given
the runtime file and what QEMU reports (``query-commands``, ``query-pci``,
the ids under ``/machine/peripheral``), so every decision is testable
without a VM.

Slots: the runtime file is the record (Ganeti 3.0 trusts it alone), but a
slot QEMU reports as taken is never handed out, whatever the file says — a
device plugged by hand, or by a half-finished earlier hotplug, must not be
collided with (the design review's "parse query-pci").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from corral.errors import ECode, HotplugError
from corral.hypervisor.kvm.model import (
    DISK_DRIVERS,
    NIC_DRIVERS,
    PCI_SLOTS,
    HvInfo,
    device_id,
)
from corral.hypervisor.kvm.params import KvmHvParams
from corral.hypervisor.kvm.runtime import KvmRuntime
from corral.rpc.types import HotplugAction, HotplugLimit, HotplugTarget

# The QMP commands each change needs (checked in query-commands, never by version).
NEEDED_COMMANDS: dict[tuple[HotplugAction, HotplugTarget], tuple[str, ...]] = {
    ("hotadd", "nic"): ("getfd", "netdev_add", "device_add", "qom-list", "query-pci"),
    ("hotadd", "disk"): ("add-fd", "blockdev-add", "device_add", "qom-list", "query-pci"),
    ("hotremove", "nic"): ("device_del", "netdev_del", "qom-list"),
    ("hotremove", "disk"): ("device_del", "blockdev-del", "remove-fd", "qom-list"),
    ("hotmod", "nic"): ("getfd", "netdev_add", "device_add", "device_del", "netdev_del"),
}
HOTPLUGGABLE_DISKS = {"paravirtual", "scsi-hd"}  # IDE cannot be hot-added/removed on i440fx
SCSI_TARGETS = 16


def machine_type(argv: list[str]) -> str:
    """The machine type of a QEMU argv (``-machine pc-q35-7.2,accel=kvm`` → ``pc-q35-7.2``)."""
    for flag, value in pairwise(argv):
        if flag in ("-machine", "-M"):
            for part in value.split(","):
                if "=" not in part or part.startswith("type="):
                    return part.removeprefix("type=")
    return ""


def limits(rt: KvmRuntime, hv: KvmHvParams, commands: Iterable[str]) -> list[HotplugLimit]:
    """Every (action, device kind) this instance cannot change live, with the reason."""
    have = set(commands)
    out: list[HotplugLimit] = []
    # Only the -machine value: any other argv word (the instance name) may start with "q35".
    mtype = machine_type(rt.kvm_cmd)
    machine = mtype if mtype.startswith(("pc-q35", "q35")) else None
    for (action, kind), needed in NEEDED_COMMANDS.items():
        missing = [c for c in needed if c not in have]
        reason = ""
        if missing:
            reason = f"this QEMU lacks the QMP command(s) {', '.join(missing)}"
        elif machine is not None and action in ("hotadd", "hotmod"):
            reason = f"machine type {machine} has no hotpluggable slots on pci.0"
        elif kind == "nic" and action != "hotremove" and hv.nic_type not in NIC_DRIVERS:
            reason = f"NIC model {hv.nic_type} is not hotpluggable"
        elif kind == "disk" and hv.disk_type not in HOTPLUGGABLE_DISKS:
            # ide.0 takes neither device_add nor device_del ("does not support hotplugging").
            reason = f"disk model {hv.disk_type} is not hotpluggable"
        elif (
            kind == "disk"
            and action == "hotadd"
            and hv.disk_type == "scsi-hd"
            and not any(d.disk.hvinfo and d.disk.hvinfo.bus == "scsi.0" for d in rt.disks)
        ):
            reason = "the instance was started without a SCSI controller (no SCSI disk)"
        if reason:
            out.append(HotplugLimit(action=action, dev_type=kind, reason=reason))
    return out


def check_supported(
    rt: KvmRuntime, hv: KvmHvParams, commands: Iterable[str], action: HotplugAction, kind: str
) -> None:
    for lim in limits(rt, hv, commands):
        if lim.action == action and lim.dev_type == kind:
            raise HotplugError(f"cannot {action[3:]} a {kind} live: {lim.reason}", ECode.STATE)


def qemu_pci_slots(query_pci: Any) -> set[int]:
    """Slots QEMU reports as taken on bus 0 (any function counts)."""
    used: set[int] = set()
    for bus in query_pci if isinstance(query_pci, list) else []:
        if not isinstance(bus, dict) or bus.get("bus", 0) != 0:
            continue
        for dev in bus.get("devices", []):
            if isinstance(dev, dict) and isinstance(dev.get("slot"), int):
                used.add(dev["slot"])
    return used


@dataclass(frozen=True)
class SlotReport:
    """Who holds the slots of pci.0 (for a clear 'no free slot' message)."""

    reserved: int
    recorded: int
    unrecorded: int


def free_slot(reservations: int, rt: KvmRuntime, qemu_used: set[int]) -> int:
    """The first slot free both in the runtime file and in QEMU."""
    recorded = {i.slot for i in runtime_hvinfos(rt) if i.slot is not None}
    used = set(range(reservations)) | recorded | qemu_used
    for slot in range(PCI_SLOTS):
        if slot not in used:
            return slot
    unrecorded = len(qemu_used - recorded - set(range(reservations)))
    raise HotplugError(
        f"no free PCI slot left on pci.0: all {PCI_SLOTS} are taken ({reservations} reserved "
        f"by kvm_pci_reservations, {len(recorded)} by the instance's NICs and disks"
        + (f", {unrecorded} by devices the runtime file does not know" if unrecorded else "")
        + "); remove a device first",
        ECode.NORES,
    )


def runtime_hvinfos(rt: KvmRuntime) -> list[HvInfo]:
    infos = [n.hvinfo for n in rt.nics if n.hvinfo is not None]
    infos += [d.disk.hvinfo for d in rt.disks if d.disk.hvinfo is not None]
    return infos


def new_nic_hvinfo(hv: KvmHvParams, uuid: str, slot: int) -> HvInfo:
    return HvInfo(
        driver=NIC_DRIVERS[hv.nic_type], id=device_id("nic", uuid), bus="pci.0", addr=hex(slot)
    )


def new_disk_hvinfo(hv: KvmHvParams, uuid: str, rt: KvmRuntime, slot: int | None) -> HvInfo:
    did = device_id("disk", uuid)
    if hv.disk_type == "scsi-hd":
        taken = {
            d.disk.hvinfo.scsi_id
            for d in rt.disks
            if d.disk.hvinfo is not None and d.disk.hvinfo.bus == "scsi.0"
        }
        target = next((t for t in range(SCSI_TARGETS) if t not in taken), None)
        if target is None:
            raise HotplugError("no free SCSI target left on scsi.0 (16)", ECode.NORES)
        return HvInfo(driver="scsi-hd", id=did, bus="scsi.0", channel=0, scsi_id=target, lun=0)
    if slot is None:
        raise HotplugError("internal error: no PCI slot chosen for a disk", ECode.FAULT)
    return HvInfo(driver=DISK_DRIVERS[hv.disk_type], id=did, bus="pci.0", addr=hex(slot))


def peripheral_ids(qom_list: Any) -> set[str]:
    """Device ids QEMU has (children of ``/machine/peripheral``)."""
    out: set[str] = set()
    for entry in qom_list if isinstance(qom_list, list) else []:
        if isinstance(entry, dict) and str(entry.get("type", "")).startswith("child<"):
            out.add(str(entry.get("name")))
    return out


def unrecorded_devices(rt: KvmRuntime, present: set[str]) -> list[str]:
    """NIC/disk devices QEMU has that the runtime file does not list (drift)."""
    known = {i.id for i in runtime_hvinfos(rt)}
    return sorted(
        d
        for d in present
        if d not in known and d.startswith(("nic-", "disk-", "hotnic-", "hotdisk-"))
    )
