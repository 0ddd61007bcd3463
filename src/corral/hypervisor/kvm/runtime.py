"""The KVM runtime file, in Ganeti's format (FORMATS.md A1).

Layer: driver storage (pure encode/decode plus an atomic write). The file
is ``[kvm_cmd, nics, hvparams, block_devices]``; it records what is really
plugged into the running QEMU (with each device's ``hvinfo``), so reboot,
migration, hotplug and ifdown read it rather than the cluster config.
Ganeti's older 3-element files and ``pci``-keyed devices are upgraded on read.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

import msgspec

from corral.config.store import write_atomic
from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm.model import HvInfo, legacy_device_id

_NIC_DRIVER = "virtio-net-pci"
_DISK_DRIVER = "virtio-blk-pci"


class RuntimeNic(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A NIC as Ganeti's ``NIC.ToDict()`` writes it (plus ``netinfo``)."""

    mac: str
    ip: str | None = None
    name: str | None = None
    network: str | None = None
    nicparams: dict[str, Any] = {}
    uuid: str
    netinfo: dict[str, str] | None = None
    hvinfo: HvInfo | None = None


class RuntimeDisk(msgspec.Struct, kw_only=True):
    """A disk as Ganeti's ``Disk.ToDict()`` writes it (the fields Corral uses)."""

    dev_type: str
    logical_id: list[Any] = []
    size: int = 0
    mode: str = "rw"
    uuid: str
    iv_name: str = ""
    name: str | None = None
    params: dict[str, Any] = {}
    hvinfo: HvInfo | None = None


class BlockDevice(msgspec.Struct, array_like=True):
    """``(disk, link, uri)``: the disk and the path QEMU's fd was opened from."""

    disk: RuntimeDisk
    link: str
    uri: str | None = None


class KvmRuntime(msgspec.Struct, array_like=True):
    kvm_cmd: list[str]
    nics: list[RuntimeNic]
    hvparams: dict[str, Any]
    disks: list[BlockDevice]

    def nic(self, uuid: str) -> RuntimeNic | None:
        return next((n for n in self.nics if n.uuid == uuid), None)

    def disk(self, uuid: str) -> BlockDevice | None:
        return next((d for d in self.disks if d.disk.uuid == uuid), None)


_encoder = msgspec.json.Encoder()


def encode(rt: KvmRuntime) -> bytes:
    return _encoder.encode(rt)


def _upgrade_device(kind: str, dev: dict[str, Any]) -> None:
    """Ganeti ≤ 2.15 kept only ``pci``: derive the ``hvinfo`` it implies."""
    if not isinstance(dev, dict):
        raise HypervisorError(f"runtime file: a {kind} entry is not an object", ECode.INVAL)
    if "uuid" not in dev:
        dev["uuid"] = str(uuidlib.uuid4())
    if "pci" in dev:
        slot = dev.pop("pci")
        if "hvinfo" not in dev and isinstance(slot, int):
            dev["hvinfo"] = {
                "driver": _NIC_DRIVER if kind == "nic" else _DISK_DRIVER,
                "id": legacy_device_id(kind, dev["uuid"], slot),
                "bus": "pci.0",
                "addr": hex(slot),
            }


_ARGV_REWRITES = {"-localtime": ["-rtc", "base=localtime"]}


def _upgrade_argv(argv: list[Any]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for a in it:
        a = str(a)
        if a in _ARGV_REWRITES:
            out += _ARGV_REWRITES[a]
        elif a == "-balloon":
            nxt = str(next(it, ""))
            if nxt.startswith("virtio"):
                out += ["-device", "virtio-balloon" + nxt[len("virtio") :]]
        else:
            out.append(a)
    return out


def upgrade(raw: Any) -> KvmRuntime:
    """Decode a loaded runtime file of any Ganeti/Corral vintage."""
    if not isinstance(raw, list) or len(raw) not in (3, 4):
        raise HypervisorError("runtime file: expected a 3- or 4-element list", ECode.INVAL)
    if len(raw) == 3:  # before disks were recorded (Ganeti < 2.10)
        raw = [*raw, []]
    kvm_cmd, nics, hvparams, disks = raw
    if not isinstance(kvm_cmd, list) or not isinstance(nics, list) or not isinstance(disks, list):
        raise HypervisorError("runtime file: malformed sections", ECode.INVAL)
    for nic in nics:
        _upgrade_device("nic", nic)
    for entry in disks:
        if not isinstance(entry, list) or not entry:
            raise HypervisorError("runtime file: malformed block device entry", ECode.INVAL)
        _upgrade_device("disk", entry[0])
        if len(entry) == 2:
            entry.append(None)
    raw = [_upgrade_argv(kvm_cmd), nics, hvparams, disks]
    try:
        return msgspec.convert(raw, type=KvmRuntime, strict=False)
    except msgspec.ValidationError as err:
        raise HypervisorError(f"runtime file: {err}", ECode.INVAL) from None


def decode(data: bytes) -> KvmRuntime:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as err:
        raise HypervisorError(f"runtime file is not JSON: {err}", ECode.INVAL) from None
    return upgrade(raw)


def load(path: str | os.PathLike[str]) -> KvmRuntime | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return decode(data)
    except HypervisorError as err:
        raise HypervisorError(f"{path}: {err.message}", err.code) from None


def save(path: str | os.PathLike[str], rt: KvmRuntime) -> None:
    """Atomic replace: a crash leaves the old or the new file, never a torn one."""
    write_atomic(Path(path), encode(rt))
