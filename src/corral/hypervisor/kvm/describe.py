"""From an instance to its runtime description, and from that to a Machine.

Layer: pure. At first start the instance spec (from the master) becomes a
:class:`KvmRuntime` with PCI slots assigned (disks first, then NICs, in
order, after the reserved slots). Every later launch — reboot, migration
target — rebuilds the :class:`Machine` from the runtime file alone, so the
guest keeps the same devices at the same slots.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm import cmdline
from corral.hypervisor.kvm.model import (
    ControlPaths,
    HvInfo,
    Machine,
    MachineDisk,
    MachineNic,
    disk_hvinfo,
    disk_serial,
    nic_hvinfo,
    used_pci_slots,
)
from corral.hypervisor.kvm.params import KVM_PARAMS, KvmHvParams
from corral.hypervisor.kvm.runtime import BlockDevice, KvmRuntime, RuntimeDisk, RuntimeNic
from corral.rpc.types import DiskSpec, InstanceSpec, NicSpec


def hv_params(raw: dict[str, Any]) -> KvmHvParams:
    """Typed parameters from a filled dict (runtime files may carry Ganeti-only keys)."""
    known = {k: v for k, v in raw.items() if k in KVM_PARAMS.params}
    try:
        return msgspec.convert(known, KvmHvParams, strict=False)
    except msgspec.ValidationError as err:
        raise HypervisorError(f"invalid KVM parameters: {err}", ECode.INVAL) from None


def runtime_nic(nic: NicSpec, hvinfo: HvInfo) -> RuntimeNic:
    """A NIC as the runtime file records it (at start and on hot-add)."""
    return RuntimeNic(
        mac=nic.mac,
        ip=nic.ip,
        name=nic.name,
        network=nic.network.get("NETWORK_UUID") if nic.network else None,
        nicparams=msgspec.structs.asdict(nic.nicparams),
        uuid=nic.uuid,
        netinfo=dict(nic.network) or None,
        hvinfo=hvinfo,
    )


def runtime_disk(disk: DiskSpec, index: int, hvinfo: HvInfo, path: str) -> RuntimeDisk:
    """A disk as the runtime file records it (at start and on hot-add)."""
    return RuntimeDisk(
        dev_type=disk.dev_type,
        logical_id=["loop", path],
        size=disk.size,
        mode=disk.mode,
        uuid=disk.uuid,
        iv_name=f"disk/{index}",
        name=disk.name,
        params=dict(disk.params),
        hvinfo=hvinfo,
    )


def initial_runtime(
    spec: InstanceSpec,
    hv: KvmHvParams,
    machine_type: str,
    accel: Literal["kvm", "tcg"],
    ctl: ControlPaths,
    runas: str | None,
) -> KvmRuntime:
    used = used_pci_slots(hv.kvm_pci_reservations, [])
    disks: list[BlockDevice] = []
    for i, d in enumerate(spec.disks):
        if not d.path:
            raise HypervisorError(f"disk {i} of {spec.name} has no path", ECode.INVAL)
        info = disk_hvinfo(hv.disk_type, d.uuid, i, used)
        disks.append(BlockDevice(disk=runtime_disk(d, i, info, d.path), link=d.path, uri=None))
    nics = [runtime_nic(n, nic_hvinfo(hv.nic_type, n.uuid, used)) for n in spec.nics]
    m = Machine(
        name=spec.name,
        uuid=spec.uuid,
        memory=spec.beparams.maxmem,
        vcpus=spec.beparams.vcpus,
        hv=hv,
        machine_type=machine_type,
        accel=accel,
        ctl=ctl,
        network_port=spec.network_port,
        runas=runas,
        nics=tuple(MachineNic(n.uuid, n.mac, _info(n.hvinfo)) for n in nics),
        disks=tuple(
            MachineDisk(
                d.disk.uuid, _info(d.disk.hvinfo), d.disk.mode == "ro", disk_serial(d.disk.uuid)
            )
            for d in disks
        ),
        extra=tuple(hv.kvm_extra.split()),
    )
    return KvmRuntime(
        kvm_cmd=cmdline.base_argv(m),
        nics=nics,
        hvparams=msgspec.structs.asdict(hv),
        disks=disks,
    )


def _info(info: HvInfo | None) -> HvInfo:
    if info is None:
        raise HypervisorError("runtime file: device without hvinfo", ECode.INVAL)
    return info


def _argv_value(argv: list[str], opt: str) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a == opt:
            return argv[i + 1]
    return None


def instance_name(rt: KvmRuntime) -> str:
    name = _argv_value(rt.kvm_cmd, "-name")
    if not name:
        raise HypervisorError("runtime file: kvm_cmd has no -name", ECode.INVAL)
    return name


def machine_from_runtime(rt: KvmRuntime, ctl: ControlPaths) -> Machine:
    """Rebuild the machine a runtime file describes (paths are this node's)."""
    argv = rt.kvm_cmd
    hv = hv_params(rt.hvparams)
    name, uuid = _argv_value(argv, "-name"), _argv_value(argv, "-uuid")
    mem, smp, mach = (
        _argv_value(argv, "-m"),
        _argv_value(argv, "-smp"),
        _argv_value(argv, "-machine"),
    )
    if not (name and uuid and mem and smp and mach):
        raise HypervisorError(
            "runtime file: kvm_cmd lacks -name/-uuid/-m/-smp/-machine", ECode.INVAL
        )
    opts = mach.split(",")
    accel = next((o.split("=", 1)[1] for o in opts[1:] if o.startswith("accel=")), "tcg")
    if accel not in ("kvm", "tcg"):
        accel = "kvm" if "kvm" in accel else "tcg"
    port = None
    vnc = _argv_value(argv, "-vnc")
    if vnc and not vnc.startswith("unix:"):
        try:
            port = 5900 + int(vnc.split(",")[0].rsplit(":", 1)[1])
        except (IndexError, ValueError):
            port = None
    try:
        memory = int(mem.split(",")[0].rstrip("Mm"))
        vcpus = int(smp.split(",")[0])
    except ValueError:
        raise HypervisorError(
            f"runtime file: bad -m {mem!r} or -smp {smp!r}", ECode.INVAL
        ) from None
    return Machine(
        name=name,
        uuid=uuid,
        memory=memory,
        vcpus=vcpus,
        hv=hv,
        machine_type=opts[0],
        accel=accel,  # type: ignore[arg-type]
        ctl=ctl,
        network_port=port,
        runas=_argv_value(argv, "-runas"),
        nics=tuple(MachineNic(n.uuid, n.mac, _info(n.hvinfo)) for n in rt.nics),
        disks=tuple(
            MachineDisk(
                d.disk.uuid, _info(d.disk.hvinfo), d.disk.mode == "ro", disk_serial(d.disk.uuid)
            )
            for d in rt.disks
        ),
        extra=tuple(hv.kvm_extra.split()),
    )
