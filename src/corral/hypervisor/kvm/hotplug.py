"""Live device changes of a running QEMU: NIC/disk hot-add, hot-remove, NIC re-link.

Layer: driver execution (decisions in :mod:`.hotplan`). The node daemon opens
every tap and image itself and passes the descriptor over the QMP socket
(SCM_RIGHTS + ``getfd``/``add-fd``), so an unprivileged or chrooted QEMU
never opens a path. Each change is all-or-nothing: the runtime file and the
tap files are written only after QEMU confirms the device is there (or
gone), and a failure undoes every step already done, in reverse.

Every operation is idempotent (ovsdbapp's ``may_exist``/``if_exists``): adding
a device that is already plugged, or removing one that is not, succeeds with
``done=False`` — so a retry after a crash or a lost reply is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from corral.errors import ECode, HotplugError, HypervisorError
from corral.hypervisor.kvm import cmdline, hotplan, runtime
from corral.hypervisor.kvm.describe import runtime_disk, runtime_nic
from corral.hypervisor.kvm.files import KvmFiles
from corral.hypervisor.kvm.launch import nic_spec
from corral.hypervisor.kvm.model import (
    Machine,
    MachineDisk,
    MachineNic,
    device_id,
    disk_serial,
)
from corral.hypervisor.kvm.params import KvmHvParams
from corral.hypervisor.kvm.qmp import Monitor
from corral.network import nicenv, nicfiles, runner
from corral.network.tap import open_tap
from corral.rpc.types import DiskSpec, HotplugResult, NicSpec

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]
UNPLUG_REPEAT = 3.0  # seconds between device_del requests while the guest has not let go


@dataclass
class HotContext:
    """One running instance, as a hotplug step sees it (under the instance's lock)."""

    name: str
    files: KvmFiles
    mon: Monitor
    rt: runtime.KvmRuntime
    machine: Machine
    tags: list[str]
    unplug_timeout: float = 15.0
    _undo: list[Undo] = field(default_factory=list)

    @property
    def hv(self) -> KvmHvParams:
        return self.machine.hv

    def save(self) -> None:
        runtime.save(self.files.runtime(self.name), self.rt)

    async def present(self) -> set[str]:
        """Device ids QEMU has right now."""
        res = await self.mon.execute("qom-list", {"path": "/machine/peripheral"})
        return hotplan.peripheral_ids(res)

    async def free_slot(self) -> int:
        qemu_used = hotplan.qemu_pci_slots(await self.mon.execute("query-pci"))
        return hotplan.free_slot(self.hv.kvm_pci_reservations, self.rt, qemu_used)

    def on_failure(self, undo: Undo) -> None:
        self._undo.append(undo)

    async def rollback(self) -> None:
        while self._undo:
            step = self._undo.pop()
            try:
                await step()
            except Exception as err:  # keep undoing the rest
                log.warning("hotplug rollback step on %s failed: %s", self.name, err)

    def commit(self) -> None:
        self._undo.clear()


async def _ignore_missing(ctx: HotContext, cmd: str, args: dict[str, Any]) -> None:
    """Run a delete command; a thing that is already gone is fine."""
    try:
        await ctx.mon.execute(cmd, args)
    except HypervisorError as err:
        text = err.message.lower()
        if not any(w in text for w in ("not found", "failed to find", "no such")):
            raise


async def unplug(ctx: HotContext, dev_id: str) -> bool:
    """``device_del`` and wait for *this* device's ``DEVICE_DELETED``; False if absent.

    A guest that ignores the ACPI eject request keeps the device: that is an
    error naming the device, and nothing else is touched. (QEMU answers a
    second ``device_del`` of a pending device with success, so a retry simply
    waits again.)
    """
    if dev_id not in await ctx.present():
        return False
    gone = ctx.mon.expect("DEVICE_DELETED", lambda d: d.get("device") == dev_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.unplug_timeout
    try:
        # A guest can miss the ACPI eject request (seen right after boot under TCG);
        # QEMU raises it again on a repeated device_del, so ask again every few seconds.
        while True:
            await ctx.mon.execute("device_del", {"id": dev_id})
            wait = min(UNPLUG_REPEAT, deadline - loop.time())
            try:
                await asyncio.wait_for(asyncio.shield(gone), max(0.0, wait))
                break
            except TimeoutError:
                pass
            if dev_id not in await ctx.present():  # the event could have been missed
                break
            if loop.time() < deadline:
                log.info("guest of %s has not released %s yet; asking again", ctx.name, dev_id)
                continue
            raise HotplugError(
                f"the guest of {ctx.name} did not release device {dev_id} within "
                f"{ctx.unplug_timeout:g} s (does it handle ACPI PCI hotplug? is it "
                "still booting?); the device stays plugged and nothing was removed",
                ECode.STATE,
            )
    finally:
        gone.cancel()
    return True


# --- NICs ------------------------------------------------------------------------------


def _insert(items: list[Any], seq: int, item: Any) -> None:
    items.insert(max(0, min(seq, len(items))), item)


async def add_nic(
    ctx: HotContext, nic: NicSpec, seq: int, slot: int | None = None
) -> HotplugResult:
    did = device_id("nic", nic.uuid)
    recorded = ctx.rt.nic(nic.uuid)
    present = await ctx.present()
    if recorded is not None and recorded.hvinfo is not None and recorded.hvinfo.id in present:
        return HotplugResult(
            device_id=recorded.hvinfo.id,
            slot=recorded.hvinfo.addr,
            done=False,
            detail="already plugged",
        )
    if recorded is not None:  # recorded, but QEMU lost it: forget the stale entry
        ctx.rt.nics.remove(recorded)
    if did in present:  # plugged by a hotplug that never got recorded: start clean
        await unplug(ctx, did)
        await _ignore_missing(ctx, "netdev_del", {"id": did})
    hvinfo = hotplan.new_nic_hvinfo(
        ctx.hv, nic.uuid, slot if slot is not None else await ctx.free_slot()
    )
    rnic = runtime_nic(nic, hvinfo)
    tap = open_tap(vnet_hdr=ctx.hv.vnet_hdr)
    vhost_fd: int | None = None
    env = nicenv.ifup_env(ctx.name, ctx.tags, nic_spec(rnic, seq), tap.name)
    down_env = nicenv.ifdown_env(ctx.name, nic_spec(rnic, seq), tap.name)
    try:

        async def ifdown() -> None:
            await runner.run_ifdown(None, down_env, tap.name, "hot-remove")

        ctx.on_failure(ifdown)
        await runner.run_ifup(None, env, tap.name)
        await ctx.mon.execute_fd("getfd", {"fdname": did}, tap.fd)
        # QEMU reads vnet_hdr off the tap itself (it refuses the option with fd=).
        netdev: dict[str, Any] = {"type": "tap", "id": did, "fd": did}
        if ctx.hv.vhost_net and hvinfo.driver == "virtio-net-pci":
            vhost_fd = _open_vhost()
            await ctx.mon.execute_fd("getfd", {"fdname": f"{did}-vhost"}, vhost_fd)
            netdev.update(vhost=True, vhostfd=f"{did}-vhost")

        async def closefd() -> None:
            await _ignore_missing(ctx, "closefd", {"fdname": did})
            if vhost_fd is not None:
                await _ignore_missing(ctx, "closefd", {"fdname": f"{did}-vhost"})

        ctx.on_failure(closefd)
        await ctx.mon.execute("netdev_add", netdev)

        async def netdev_del() -> None:
            await _ignore_missing(ctx, "netdev_del", {"id": did})

        ctx.on_failure(netdev_del)
        m = dataclasses.replace(
            ctx.machine, nics=(*ctx.machine.nics, MachineNic(nic.uuid, nic.mac, hvinfo))
        )
        await ctx.mon.execute("device_add", cmdline.nic_device(m, len(m.nics) - 1))

        async def device_del() -> None:
            await unplug(ctx, did)

        ctx.on_failure(device_del)
        if did not in await ctx.present():
            raise HotplugError(f"QEMU accepted {did} but does not list it", ECode.FAULT)
        # Confirmed: only now the records (tap file first, for a later ifdown).
        nicfiles.write_tap(ctx.files.nic_dir, ctx.name, nic.uuid, seq, tap.name)
        _insert(ctx.rt.nics, seq, rnic)
        ctx.save()
        ctx.commit()
    except BaseException:
        await ctx.rollback()
        raise
    finally:
        tap.close()  # QEMU holds its own descriptor now (or the tap vanishes with ours)
        if vhost_fd is not None:
            os.close(vhost_fd)
    return HotplugResult(device_id=did, slot=hvinfo.addr, detail=f"tap {tap.name}")


def _open_vhost() -> int:
    try:
        return os.open("/dev/vhost-net", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise HypervisorError(
            f"vhost_net is on but /dev/vhost-net cannot be opened: {err.strerror}", ECode.ENVIRON
        ) from None


async def remove_nic(ctx: HotContext, nic_uuid: str, seq: int) -> HotplugResult:
    recorded = ctx.rt.nic(nic_uuid)
    did = (
        recorded.hvinfo.id
        if recorded is not None and recorded.hvinfo is not None
        else device_id("nic", nic_uuid)
    )
    was_plugged = await unplug(ctx, did)
    await _ignore_missing(ctx, "netdev_del", {"id": did})
    if recorded is None:
        detail = (
            "unplugged a device the runtime file did not list" if was_plugged else "not plugged"
        )
        return HotplugResult(device_id=did, done=was_plugged, detail=detail)
    tap = nicfiles.read_tap(ctx.files.nic_dir, ctx.name, nic_uuid)
    if tap is not None:
        index = ctx.rt.nics.index(recorded)
        env = nicenv.ifdown_env(ctx.name, nic_spec(recorded, index), tap)
        await runner.run_ifdown(None, env, tap, "hot-remove")
    nicfiles.remove_tap(ctx.files.nic_dir, ctx.name, nic_uuid)
    ctx.rt.nics.remove(recorded)
    ctx.save()
    slot = recorded.hvinfo.addr if recorded.hvinfo else None
    return HotplugResult(device_id=did, slot=slot, done=True, detail=f"tap {tap or '?'} released")


async def modify_nic(ctx: HotContext, nic: NicSpec, seq: int) -> HotplugResult:
    """Re-link in place (link/mode/VLAN/IP: same tap, the guest keeps its NIC), or
    replug at the same slot when the MAC changed. A NIC that is not plugged is plugged."""
    recorded = ctx.rt.nic(nic.uuid)
    if recorded is None or recorded.hvinfo is None or recorded.hvinfo.id not in await ctx.present():
        res = await add_nic(ctx, nic, seq)
        return msgspec.structs.replace(res, detail=f"was not plugged; {res.detail}")
    if recorded.mac.lower() != nic.mac.lower():
        slot = recorded.hvinfo.slot
        await remove_nic(ctx, nic.uuid, seq)
        res = await add_nic(ctx, nic, seq, slot=slot)
        return msgspec.structs.replace(res, detail=f"MAC changed: replugged ({res.detail})")
    tap = nicfiles.read_tap(ctx.files.nic_dir, ctx.name, nic.uuid)
    if tap is None:
        raise HotplugError(
            f"no tap recorded for NIC {nic.uuid} of {ctx.name}; cannot re-link it", ECode.STATE
        )
    index = ctx.rt.nics.index(recorded)
    old_env = nicenv.ifup_env(ctx.name, ctx.tags, nic_spec(recorded, index), tap)
    new = runtime_nic(nic, recorded.hvinfo)
    new_env = nicenv.ifup_env(ctx.name, ctx.tags, nic_spec(new, seq), tap)
    if (new.nicparams, new.ip, new.netinfo) == (recorded.nicparams, recorded.ip, recorded.netinfo):
        # Nothing about the wiring changed (a rename): don't blip the guest's link.
        ctx.rt.nics[index] = new
        ctx.save()
        return HotplugResult(
            device_id=recorded.hvinfo.id,
            slot=recorded.hvinfo.addr,
            done=False,
            detail="wiring unchanged",
        )
    await runner.run_ifdown(
        None, nicenv.ifdown_env(ctx.name, nic_spec(recorded, index), tap), tap, "hot-remove"
    )
    try:
        await runner.run_ifup(None, new_env, tap)
    except HypervisorError:
        # Put the NIC back where it was: the guest must not end up unconnected.
        await runner.run_ifdown(
            None, nicenv.ifdown_env(ctx.name, nic_spec(new, seq), tap), tap, "hot-remove"
        )
        with contextlib.suppress(HypervisorError):
            await runner.run_ifup(None, old_env, tap)
        raise
    ctx.rt.nics[index] = new
    if index != seq:
        ctx.rt.nics.pop(index)
        _insert(ctx.rt.nics, seq, new)
    nicfiles.write_tap(ctx.files.nic_dir, ctx.name, nic.uuid, seq, tap)
    ctx.save()
    return HotplugResult(
        device_id=recorded.hvinfo.id, slot=recorded.hvinfo.addr, detail=f"tap {tap} re-linked"
    )


# --- disks -----------------------------------------------------------------------------


async def _fdsets_of(ctx: HotContext, dev_id: str) -> list[int]:
    res = await ctx.mon.execute("query-fdsets")
    out = []
    for fdset in res if isinstance(res, list) else []:
        if any(f.get("opaque") == dev_id for f in fdset.get("fds", [])):
            out.append(int(fdset["fdset-id"]))
    return out


async def _drop_fdsets(ctx: HotContext, dev_id: str) -> None:
    for fdset in await _fdsets_of(ctx, dev_id):
        await _ignore_missing(ctx, "remove-fd", {"fdset-id": fdset})


async def add_disk(ctx: HotContext, disk: DiskSpec, seq: int, path: str) -> HotplugResult:
    did = device_id("disk", disk.uuid)
    recorded = ctx.rt.disk(disk.uuid)
    present = await ctx.present()
    if (
        recorded is not None
        and recorded.disk.hvinfo is not None
        and recorded.disk.hvinfo.id in present
    ):
        info = recorded.disk.hvinfo
        return HotplugResult(
            device_id=info.id, slot=info.addr, done=False, detail="already plugged"
        )
    if recorded is not None:
        ctx.rt.disks.remove(recorded)
    if did in present:
        await unplug(ctx, did)
    # A block node or fd set left by an unrecorded earlier attempt would make
    # blockdev-add fail ("duplicate node name"): clear them first.
    await _ignore_missing(ctx, "blockdev-del", {"node-name": did})
    await _drop_fdsets(ctx, did)
    slot = None if ctx.hv.disk_type == "scsi-hd" else await ctx.free_slot()
    hvinfo = hotplan.new_disk_hvinfo(ctx.hv, disk.uuid, ctx.rt, slot)
    flags = os.O_RDONLY if disk.mode == "ro" else os.O_RDWR
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as err:
        raise HypervisorError(
            f"cannot open disk {seq} ({path}): {err.strerror}", ECode.ENVIRON
        ) from None
    try:
        res = await ctx.mon.execute_fd("add-fd", {"opaque": did}, fd)
        fdset = int(res["fdset-id"])

        async def remove_fd() -> None:
            await _ignore_missing(ctx, "remove-fd", {"fdset-id": fdset})

        ctx.on_failure(remove_fd)
        mdisk = MachineDisk(disk.uuid, hvinfo, disk.mode == "ro", disk_serial(disk.uuid))
        m = dataclasses.replace(ctx.machine, disks=(*ctx.machine.disks, mdisk))
        index = len(m.disks) - 1
        await ctx.mon.execute("blockdev-add", cmdline.blockdev_options(m, index, fdset))

        async def blockdev_del() -> None:
            await _ignore_missing(ctx, "blockdev-del", {"node-name": did})

        ctx.on_failure(blockdev_del)
        await ctx.mon.execute("device_add", cmdline.disk_device(m, index))

        async def device_del() -> None:
            await unplug(ctx, did)

        ctx.on_failure(device_del)
        if did not in await ctx.present():
            raise HotplugError(f"QEMU accepted {did} but does not list it", ECode.FAULT)
        _insert(
            ctx.rt.disks,
            seq,
            runtime.BlockDevice(disk=runtime_disk(disk, seq, hvinfo, path), link=path),
        )
        ctx.save()
        ctx.commit()
    except BaseException:
        await ctx.rollback()
        raise
    finally:
        os.close(fd)  # QEMU keeps its copy in the fd set
    where = hvinfo.addr or f"scsi-id {hvinfo.scsi_id}"
    return HotplugResult(device_id=did, slot=hvinfo.addr, detail=f"{path} at {where}")


async def remove_disk(ctx: HotContext, disk_uuid: str) -> HotplugResult:
    recorded = ctx.rt.disk(disk_uuid)
    info = recorded.disk.hvinfo if recorded is not None else None
    did = info.id if info is not None else device_id("disk", disk_uuid)
    was_plugged = await unplug(ctx, did)
    await _ignore_missing(ctx, "blockdev-del", {"node-name": did})
    await _drop_fdsets(ctx, did)
    if recorded is None:
        detail = (
            "unplugged a device the runtime file did not list" if was_plugged else "not plugged"
        )
        return HotplugResult(device_id=did, done=was_plugged, detail=detail)
    ctx.rt.disks.remove(recorded)
    ctx.save()
    return HotplugResult(device_id=did, slot=info.addr if info else None, detail="released")


async def resize_disk(ctx: HotContext, disk_uuid: str, size_mib: int) -> bool:
    """``block_resize`` of a plugged disk (the guest sees the new capacity); False if absent."""
    recorded = ctx.rt.disk(disk_uuid)
    if recorded is None or recorded.disk.hvinfo is None:
        return False
    await ctx.mon.execute(
        "block_resize", {"node-name": recorded.disk.hvinfo.id, "size": size_mib << 20}
    )
    recorded.disk.size = size_mib
    ctx.save()
    return True
