"""Node backend: the functions node RPCs run.

Layer: node backend. Stateless apart from the node's own paths: everything
a call needs arrives in its arguments. Drivers (hypervisors, storage, hook
scripts) do the work.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from corral import __version__, hypervisor, storage
from corral.backend import hooks
from corral.backend.dispatch import handler
from corral.errors import HypervisorError
from corral.hypervisor.base import Hypervisor
from corral.paths import Paths
from corral.rpc import defs
from corral.rpc import types as t


class NodeBackend:
    def __init__(self, paths: Paths, node_name: str) -> None:
        self.paths = paths
        self.node_name = node_name
        # Set by corral-noded: re-read the CRL / drop the cluster's TLS context.
        self.on_crl_update: list[Callable[[], None]] = []
        self.on_leave: list[Callable[[], None]] = []
        # One driver object per hypervisor for the daemon's lifetime: the KVM
        # driver keeps a QMP connection (and event listener) per running VM.
        self._hvs: dict[str, Hypervisor] = {}

    def local_disk(self, disk: t.DiskSpec) -> t.DiskSpec:
        """The disk with its path as this node sees it (under the root prefix)."""
        if not disk.path:
            return disk
        return msgspec.structs.replace(disk, path=str(self.paths.host_path(disk.path)))

    def local_instance(self, inst: t.InstanceSpec) -> t.InstanceSpec:
        return msgspec.structs.replace(inst, disks=[self.local_disk(d) for d in inst.disks])

    def hv(self, name: str) -> Hypervisor:
        drv = self._hvs.get(name)
        if drv is None:
            drv = self._hvs[name] = hypervisor.get(name, self.paths)
        return drv

    async def startup(self) -> None:
        """Reattach drivers to VMs that kept running while the daemon was down."""
        for name in hypervisor.HYPERVISORS:
            await self.hv(name).recover()

    async def shutdown(self) -> None:
        for drv in self._hvs.values():
            await drv.close()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


@handler(defs.VERSION)
async def version(b: NodeBackend, args: t.Empty) -> t.VersionResult:
    return t.VersionResult(protocol=defs.PROTOCOL_VERSION, software=__version__)


@handler(defs.NODE_INFO)
async def node_info(b: NodeBackend, args: t.HypervisorListArgs) -> t.NodeInfo:
    mem = _meminfo()
    used = 0
    for name in args.hypervisors:
        hv = b.hv(name)
        used += hv.memory_used(await hv.all_instances_info())
    total = mem.get("MemTotal", 0)
    avail = mem.get("MemAvailable", 0)
    st = storage.fs_usage(b.paths.file_storage_dir)
    return t.NodeInfo(
        name=b.node_name,
        memory_total=total,
        memory_free=max(0, avail - used),
        memory_dom0=total - avail,
        cpu_total=os.cpu_count() or 1,
        disk_total=st.total,
        disk_free=st.free,
        bootid=_boot_id(),
        time=time.time(),
    )


@handler(defs.ALL_INSTANCES_INFO)
async def all_instances_info(b: NodeBackend, args: t.HypervisorListArgs) -> t.AllInstancesInfo:
    out: dict[str, t.InstanceRuntime] = {}
    for name in args.hypervisors:
        out.update(await b.hv(name).all_instances_info())
    return t.AllInstancesInfo(instances=out)


@handler(defs.INSTANCE_INFO)
async def instance_info(b: NodeBackend, args: t.InstanceNameArgs) -> t.InstanceInfoResult:
    return t.InstanceInfoResult(runtime=await b.hv(args.hypervisor).instance_info(args.name))


@handler(defs.INSTANCE_START)
async def instance_start(b: NodeBackend, args: t.InstanceStartArgs) -> t.Empty:
    inst = b.local_instance(args.instance)
    hv = b.hv(inst.hypervisor)
    hv.verify_params(inst.hvparams)
    for d in inst.disks:
        if d.path and not os.path.exists(d.path):
            raise HypervisorError(f"disk {d.index} of {inst.name} is missing: {d.path}")
    await hv.start(inst, paused=args.startup_paused)
    return t.Empty()


@handler(defs.INSTANCE_SHUTDOWN)
async def instance_shutdown(b: NodeBackend, args: t.InstanceStopArgs) -> t.Empty:
    await b.hv(args.instance.hypervisor).stop(args.instance, args.force, args.timeout)
    return t.Empty()


@handler(defs.INSTANCE_REBOOT)
async def instance_reboot(b: NodeBackend, args: t.InstanceRebootArgs) -> t.Empty:
    inst = b.local_instance(args.instance)
    hv = b.hv(inst.hypervisor)
    if args.reboot_type == "full":
        await hv.stop(inst, force=False, timeout=args.timeout)
        await hv.start(inst)
    else:
        await hv.reboot(inst, hard=args.reboot_type == "hard", timeout=args.timeout)
    return t.Empty()


@handler(defs.BLOCKDEV_CREATE)
async def blockdev_create(b: NodeBackend, args: t.DiskCreateArgs) -> t.Empty:
    await storage.create(b.local_disk(args.disk))
    return t.Empty()


@handler(defs.BLOCKDEV_REMOVE)
async def blockdev_remove(b: NodeBackend, args: t.DiskRemoveArgs) -> t.Empty:
    await storage.remove(b.local_disk(args.disk))
    return t.Empty()


@handler(defs.BLOCKDEV_GROW)
async def blockdev_grow(b: NodeBackend, args: t.DiskGrowArgs) -> t.DiskGrowResult:
    disk = b.local_disk(args.disk)
    size = await storage.grow(disk, args.new_size)
    live = False
    if args.instance is not None:
        inst = b.local_instance(args.instance)
        live = await b.hv(inst.hypervisor).disk_grown(inst, disk, size)
    return t.DiskGrowResult(size=size, live=live)


@handler(defs.HOTPLUG_DEVICE)
async def hotplug_device(b: NodeBackend, args: t.HotplugArgs) -> t.HotplugResult:
    inst = b.local_instance(args.instance)
    device = b.local_disk(args.device) if isinstance(args.device, t.DiskSpec) else args.device
    extra = str(b.paths.host_path(args.extra)) if args.extra else None
    local = msgspec.structs.replace(args, instance=inst, device=device, extra=extra)
    return await b.hv(inst.hypervisor).hotplug(local)


@handler(defs.HOTPLUG_SUPPORTED)
async def hotplug_supported(b: NodeBackend, args: t.HotplugSupportedArgs) -> t.HotplugSupportResult:
    inst = args.instance
    return await b.hv(inst.hypervisor).hotplug_supported(inst)


@handler(defs.MIGRATION_INFO)
async def migration_info(b: NodeBackend, args: t.InstanceNameArgs) -> t.MigrationInfo:
    return t.MigrationInfo(data=await b.hv(args.hypervisor).migration_info(args.name))


@handler(defs.ACCEPT_INSTANCE)
async def accept_instance(b: NodeBackend, args: t.AcceptInstanceArgs) -> t.Empty:
    inst = b.local_instance(args.instance)
    hv = b.hv(inst.hypervisor)
    hv.verify_params(inst.hvparams)
    await hv.accept_instance(inst, args.info.data, args.address, args.port)
    return t.Empty()


@handler(defs.INSTANCE_MIGRATE)
async def instance_migrate(b: NodeBackend, args: t.InstanceMigrateArgs) -> t.Empty:
    inst = args.instance
    await b.hv(inst.hypervisor).migrate(inst, args.address, args.port, args.live)
    return t.Empty()


@handler(defs.INSTANCE_MIGRATION_STATUS)
async def instance_migration_status(
    b: NodeBackend, args: t.MigrationStatusArgs
) -> t.MigrationStatus:
    return await b.hv(args.hypervisor).migration_status(args.name, min(args.wait, 5.0))


@handler(defs.FINALIZE_MIGRATION_DST)
async def finalize_migration_dst(b: NodeBackend, args: t.FinalizeMigrationArgs) -> t.Empty:
    inst = b.local_instance(args.instance)
    await b.hv(inst.hypervisor).finalize_migration_dst(inst, args.success, args.live)
    return t.Empty()


@handler(defs.FINALIZE_MIGRATION_SRC)
async def finalize_migration_src(b: NodeBackend, args: t.FinalizeMigrationArgs) -> t.Empty:
    inst = b.local_instance(args.instance)
    await b.hv(inst.hypervisor).finalize_migration_src(inst, args.success, args.live)
    return t.Empty()


@handler(defs.NODE_CLEANUP_STALE)
async def node_cleanup_stale(b: NodeBackend, args: t.NodeCleanupArgs) -> t.NodeCleanupResult:
    cleaned: list[t.CleanedInstance] = []
    for name in args.hypervisors:
        cleaned += await b.hv(name).cleanup_stale(args.instances)
    return t.NodeCleanupResult(cleaned=cleaned)


@handler(defs.HOOKS_RUNNER)
async def hooks_runner(b: NodeBackend, args: t.HooksRunArgs) -> t.HooksResult:
    results = await hooks.run_hooks(b.paths.hooks_dir, args.hpath, args.phase, args.env)
    return t.HooksResult(results=results)


@handler(defs.BRIDGES_EXIST)
async def bridges_exist(b: NodeBackend, args: t.BridgesArgs) -> t.BridgesResult:
    from corral.network.setup import bridge_exists

    # pyroute2's sync API runs its own event loop: keep it off the daemon's loop.
    def missing() -> list[str]:
        return [br for br in args.bridges if not bridge_exists(br)]

    return t.BridgesResult(missing=await asyncio.to_thread(missing))


@handler(defs.HV_PARAMS_VERIFY)
async def hypervisor_validate_params(b: NodeBackend, args: t.HvParamsArgs) -> t.Empty:
    b.hv(args.hypervisor).verify_params(args.hvparams)
    return t.Empty()


@handler(defs.TEST_DELAY)
async def test_delay(b: NodeBackend, args: t.DelayArgs) -> t.Empty:
    await asyncio.sleep(max(0.0, args.duration))
    return t.Empty()
