"""The KVM hypervisor: real QEMU processes driven through QMP.

Layer: driver (node side). One long-lived :class:`KvmHypervisor` per node
daemon holds a QMP connection per VM; its event listener notices a guest
that powered itself off (QEMU runs with ``-no-shutdown``), records it as a
user shutdown and cleans up. Start, reboot and (later) migration all go
through :meth:`_launch` from a runtime description, never a frozen argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, ClassVar, Literal

from corral.errors import ECode, HotplugError, HypervisorError
from corral.hypervisor.base import Hypervisor
from corral.hypervisor.kvm import (
    cmdline,
    hotplan,
    hotplug,
    launch,
    migration,
    probe,
    runtime,
    stale,
    verify,
)
from corral.hypervisor.kvm.describe import (
    hv_params,
    initial_runtime,
    instance_name,
    machine_from_runtime,
)
from corral.hypervisor.kvm.files import KvmFiles
from corral.hypervisor.kvm.params import KVM_PARAMS
from corral.hypervisor.kvm.qmp import EventCallback, Monitor, MonitorPool
from corral.paths import Paths
from corral.rpc.types import (
    CleanedInstance,
    DiskSpec,
    HotplugArgs,
    HotplugResult,
    HotplugSupportResult,
    InstanceRuntime,
    InstanceSpec,
    MigrationStatus,
    NicSpec,
    RuntimeDiskInfo,
    RuntimeNicInfo,
)

log = logging.getLogger(__name__)

RunState = Literal["running", "paused", "shutdown", "crashed", "blocked"]

_STATE: dict[str, RunState] = {
    "running": "running",
    "paused": "paused",
    "prelaunch": "paused",
    "inmigrate": "paused",
    "postmigrate": "paused",
    "finish-migrate": "paused",
    "suspended": "paused",
    "save-vm": "paused",
    "restore-vm": "paused",
    "debug": "paused",
    "watchdog": "paused",
    "colo": "paused",
    "io-error": "blocked",
    "shutdown": "shutdown",
    "guest-panicked": "crashed",
    "internal-error": "crashed",
}


def _uptime(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, up - start_ticks / os.sysconf("SC_CLK_TCK"))


def _devices(
    files: KvmFiles, name: str, rt: runtime.KvmRuntime | None
) -> tuple[list[RuntimeNicInfo] | None, list[RuntimeDiskInfo] | None]:
    """What the runtime file says is plugged in (for drift checks against the config)."""
    if rt is None:
        return None, None
    from corral.network import nicfiles

    nics = [
        RuntimeNicInfo(
            uuid=n.uuid,
            device_id=n.hvinfo.id if n.hvinfo else "",
            slot=n.hvinfo.addr if n.hvinfo else None,
            mac=n.mac,
            ip=n.ip,
            name=n.name,
            mode=str(n.nicparams.get("mode", "")),
            link=str(n.nicparams.get("link", "")),
            vlan=str(n.nicparams.get("vlan", "")),
            tap=nicfiles.read_tap(files.nic_dir, name, n.uuid),
        )
        for n in rt.nics
    ]
    disks = [
        RuntimeDiskInfo(
            uuid=d.disk.uuid,
            device_id=d.disk.hvinfo.id if d.disk.hvinfo else "",
            slot=d.disk.hvinfo.addr if d.disk.hvinfo else None,
            size=d.disk.size,
            mode=d.disk.mode,
            path=d.link,
        )
        for d in rt.disks
    ]
    return nics, disks


class KvmHypervisor(Hypervisor):
    NAME = "kvm"
    PARAMS: ClassVar = KVM_PARAMS

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        self.files = KvmFiles(paths)
        self.monitors = MonitorPool(self._event_handler)
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopping: set[str] = set()  # shutdowns we asked for (not user shutdowns)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- parameter checks -------------------------------------------------
    @classmethod
    def check_syntax(cls, filled: dict[str, Any]) -> None:
        verify.check_syntax(hv_params(filled))

    def verify_params(self, hvparams: dict[str, Any]) -> None:
        verify.check_node(hv_params(hvparams))

    # --- helpers ----------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _monitor(self, name: str) -> Monitor:
        return await self.monitors.get(name, self.files.control(name).qmp)

    def _event_handler(self, name: str) -> EventCallback:
        async def on_event(event: str, data: dict[str, Any]) -> None:
            if event == "SHUTDOWN" and data.get("guest") and name not in self._stopping:
                self._spawn(self._user_shutdown(name, str(data.get("reason", "guest-shutdown"))))

        return on_event

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _user_shutdown(self, name: str, reason: str) -> None:
        """The guest powered off (or reset with reboot_behavior=exit): clean up, remember."""
        async with self._lock(name):
            if name in self._stopping:
                return
            pid = launch.pid_of(self.files, name)
            if pid is None:
                return
            log.info("instance %s shut down from inside the guest (%s)", name, reason)
            self.files.shutdown_marker(name).write_text(f"{reason} {time.time():.3f}\n")
            await self._terminate(name, pid, context="shutdown", keep_marker=True)

    async def _terminate(
        self, name: str, pid: int | None, *, context: str, keep_marker: bool = False
    ) -> None:
        """Make QEMU exit (quit, then signals), then undo the node-side setup."""
        # Also after a completed migration: SIGKILL instead of quit saves
        # nothing there, the exit is the kernel freeing the guest's memory
        # (~20 ms for 256 MiB here), and QEMU's own teardown is quick.
        if pid is not None:
            mon = self.monitors.cached(name)
            if mon is not None:
                with contextlib.suppress(HypervisorError):
                    await mon.execute("quit", timeout=5)
            if not await launch.wait_exit(self.files, name, pid, 10.0):
                await launch.kill(self.files, name, pid)
        await self.monitors.drop(name)
        rt = self._load_runtime(name)
        await launch.deconfigure(rt, self.files, name, context)
        self.files.remove_all(name, keep_marker=keep_marker)

    def _load_runtime(self, name: str) -> runtime.KvmRuntime | None:
        try:
            return runtime.load(self.files.runtime(name))
        except HypervisorError as err:
            log.warning("%s", err)
            return None

    # --- lifecycle --------------------------------------------------------
    async def start(self, inst: InstanceSpec, paused: bool = False) -> None:
        self.files.check_name(inst.name)
        hv = hv_params(inst.hvparams)
        # In a thread: the NIC checks use pyroute2's sync API (its own event loop).
        await asyncio.to_thread(verify.check_node, hv, inst)
        async with self._lock(inst.name):
            await self._clear_stale(inst.name)
            ctl = self.files.control(inst.name)
            machine_type = await probe.pin_machine(hv.kvm_path, hv.machine_version)
            rt = initial_runtime(
                inst, hv, machine_type, probe.accelerator(hv.kvm_flag), ctl, verify.runas_user(hv)
            )
            await self._launch(rt, inst.tags, paused=paused)

    async def _clear_stale(self, name: str) -> None:
        pid = launch.pid_of(self.files, name)
        if pid is not None:
            state = await self._query_state(name)
            if state != "shutdown":
                raise HypervisorError(f"instance {name} is already running", ECode.STATE)
            await self._terminate(name, pid, context="shutdown")
        else:
            # Leftovers of a QEMU that died (crash, node reboot): routes, files.
            await launch.deconfigure(self._load_runtime(name), self.files, name, "shutdown")
            self.files.remove_all(name)

    async def _launch(
        self,
        rt: runtime.KvmRuntime,
        tags: list[str],
        *,
        paused: bool = False,
        incoming: str | None = None,
        defer_modes: tuple[str, ...] = (),
    ) -> None:
        self.files.ensure()
        name = instance_name(rt)
        ctl = self.files.control(name)
        m = machine_from_runtime(rt, ctl)
        if m.hv.use_chroot:
            os.makedirs(ctl.chroot, exist_ok=True)
        opened = launch.Opened()
        try:
            # Saved first: if anything below fails, _terminate undoes it from this file.
            runtime.save(self.files.runtime(name), rt)
            disk_fds = launch.open_disks(rt, opened)
            nic_fds = await launch.open_nics(self.files, rt, m, tags, opened, defer_modes)
            argv = cmdline.exec_argv(m, nic_fds, disk_fds, paused=paused, incoming=incoming)
            await launch.exec_qemu(argv, opened.fds)
            opened.close_fds()  # QEMU holds its own copies now
            mon = await self._monitor(name)
            pw = verify.vnc_password(m.hv)
            if pw is not None:
                await mon.execute("set_password", {"protocol": "vnc", "password": pw})
        except BaseException:
            opened.close_fds()
            pid = launch.pid_of(self.files, name)
            with contextlib.suppress(Exception):
                await self._terminate(name, pid, context="shutdown")
            raise

    async def stop(self, inst: InstanceSpec, force: bool, timeout: float) -> None:
        self.files.check_name(inst.name)
        async with self._lock(inst.name):
            await self._stop_locked(inst.name, force, timeout)

    async def _stop_locked(self, name: str, force: bool, timeout: float) -> None:
        pid = launch.pid_of(self.files, name)
        self._stopping.add(name)
        try:
            if pid is not None and not force:
                await self._acpi_shutdown(name, pid, timeout)
            await self._terminate(name, launch.pid_of(self.files, name), context="shutdown")
        finally:
            self._stopping.discard(name)

    async def _acpi_shutdown(self, name: str, pid: int, timeout: float) -> None:
        """ACPI power button; returns when the guest is off or ``timeout`` passed."""
        try:
            mon = await self._monitor(name)
            if (await mon.execute("query-status"))["status"] == "shutdown":
                return
            done = mon.expect("SHUTDOWN")
            await mon.execute("system_powerdown")
        except HypervisorError as err:
            log.warning("soft shutdown of %s impossible (%s); stopping it hard", name, err)
            return
        exited = asyncio.ensure_future(launch.wait_exit(self.files, name, pid, timeout))
        try:
            waits: set[asyncio.Future[Any]] = {done, exited}
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            exited.cancel()

    async def reboot(self, inst: InstanceSpec, hard: bool, timeout: float) -> None:
        self.files.check_name(inst.name)
        async with self._lock(inst.name):
            if launch.pid_of(self.files, inst.name) is None:
                raise HypervisorError(f"instance {inst.name} is not running", ECode.STATE)
            rt = self._load_runtime(inst.name)
            no_reboot = rt is not None and hv_params(rt.hvparams).reboot_behavior == "exit"
            if hard and not no_reboot:
                # A hardware reset: same QEMU, same devices; the guest reboots at once.
                await (await self._monitor(inst.name)).execute("system_reset")
                return
            # reboot_behavior=exit runs QEMU with -no-reboot, which turns every reset into
            # a shutdown (the admin's, and the firmware's own reset right after it), so a
            # hard reboot there is a forced stop and a new QEMU from the runtime file.
            if rt is None:
                raise HypervisorError(f"instance {inst.name} has no runtime file", ECode.STATE)
            await self._stop_locked(inst.name, force=hard, timeout=timeout)
            await self._launch(rt, inst.tags)

    # --- hotplug ----------------------------------------------------------
    async def _hot_context(
        self, name: str, tags: list[str], timeout: float = 15.0
    ) -> hotplug.HotContext:
        if launch.pid_of(self.files, name) is None:
            raise HotplugError(f"instance {name} is not running", ECode.STATE)
        rt = self._load_runtime(name)
        if rt is None:
            raise HotplugError(f"instance {name} runs without a runtime file", ECode.STATE)
        mon = await self._monitor(name)
        m = machine_from_runtime(rt, self.files.control(name))
        return hotplug.HotContext(name, self.files, mon, rt, m, tags, unplug_timeout=timeout)

    async def hotplug_supported(self, inst: InstanceSpec) -> HotplugSupportResult:
        self.files.check_name(inst.name)
        if launch.pid_of(self.files, inst.name) is None:
            return HotplugSupportResult(running=False)
        ctx = await self._hot_context(inst.name, inst.tags)
        if (await ctx.mon.execute("query-status"))["status"] == "shutdown":
            return HotplugSupportResult(running=False)  # powered off by the guest
        return HotplugSupportResult(limits=hotplan.limits(ctx.rt, ctx.hv, await ctx.mon.commands()))

    async def _hotplug_locked(self, ctx: hotplug.HotContext, args: HotplugArgs) -> HotplugResult:
        hotplan.check_supported(
            ctx.rt, ctx.hv, await ctx.mon.commands(), args.action, args.dev_type
        )
        dev = args.device
        if isinstance(dev, NicSpec) and args.dev_type == "nic":
            if args.action == "hotadd":
                return await hotplug.add_nic(ctx, dev, args.seq)
            if args.action == "hotremove":
                return await hotplug.remove_nic(ctx, dev.uuid, args.seq)
            return await hotplug.modify_nic(ctx, dev, args.seq)
        if isinstance(dev, DiskSpec) and args.dev_type == "disk":
            if args.action == "hotadd":
                path = args.extra or dev.path
                if not path:
                    raise HotplugError(f"disk {dev.uuid} has no path", ECode.INVAL)
                return await hotplug.add_disk(ctx, dev, args.seq, path)
            if args.action == "hotremove":
                return await hotplug.remove_disk(ctx, dev.uuid)
        raise HotplugError(
            f"{args.action} of a {args.dev_type} is not a live change KVM can make "
            f"(device given: {type(dev).__name__})",
            ECode.INVAL,
        )

    async def hotplug(self, args: HotplugArgs) -> HotplugResult:
        name = args.instance.name
        self.files.check_name(name)
        async with self._lock(name):
            ctx = await self._hot_context(name, args.instance.tags, args.unplug_timeout)
            try:
                return await self._hotplug_locked(ctx, args)
            except HypervisorError as err:
                if launch.pid_of(self.files, name) is not None:
                    raise
                # "QMP getfd: connection lost" alone does not tell the admin why.
                raise HotplugError(
                    f"QEMU of {name} exited during the {args.action.replace('hot', 'hot-')} of a "
                    f"{args.dev_type} ({err.message}); the instance is down now: "
                    "gnt-instance startup starts it with its configured devices",
                    ECode.STATE,
                ) from err

    async def disk_grown(self, inst: InstanceSpec, disk: DiskSpec, new_size: int) -> bool:
        self.files.check_name(inst.name)
        async with self._lock(inst.name):
            if launch.pid_of(self.files, inst.name) is None:
                return False
            ctx = await self._hot_context(inst.name, inst.tags)
            return await hotplug.resize_disk(ctx, disk.uuid, new_size)

    # --- migration --------------------------------------------------------
    async def migration_info(self, name: str) -> str:
        return await migration.migration_info(self, name)

    async def accept_instance(self, inst: InstanceSpec, info: str, address: str, port: int) -> None:
        await migration.accept(self, inst, info, address, port)

    async def migrate(self, inst: InstanceSpec, address: str, port: int, live: bool) -> None:
        await migration.migrate(self, inst, address, port, live)

    async def migration_status(self, name: str, wait: float = 0.0) -> MigrationStatus:
        return await migration.status(self, name, wait)

    async def finalize_migration_dst(self, inst: InstanceSpec, success: bool, live: bool) -> None:
        await migration.finalize_dst(self, inst, success, live)

    async def finalize_migration_src(self, inst: InstanceSpec, success: bool, live: bool) -> None:
        await migration.finalize_src(self, inst, success, live)

    # --- state ------------------------------------------------------------
    async def _query_state(self, name: str) -> str | None:
        try:
            mon = await self._monitor(name)
            return str((await mon.execute("query-status", timeout=5))["status"])
        except HypervisorError:
            return None

    async def instance_info(self, name: str) -> InstanceRuntime | None:
        self.files.check_name(name)
        pid = launch.pid_of(self.files, name)
        if pid is None:
            if self.files.shutdown_marker(name).exists():
                return InstanceRuntime(name=name, state="shutdown", memory=0, vcpus=0)
            return None
        rt = self._load_runtime(name)
        memory = vcpus = 0
        nics, disks = _devices(self.files, name, rt)
        if rt is not None:
            with contextlib.suppress(HypervisorError):
                m = machine_from_runtime(rt, self.files.control(name))
                memory, vcpus = m.memory, m.vcpus
        status = await self._query_state(name)
        unrecorded: list[str] = []
        lost: list[str] = []
        if status is not None and rt is not None:
            with contextlib.suppress(HypervisorError):
                mon = await self._monitor(name)
                present = hotplan.peripheral_ids(
                    await mon.execute("qom-list", {"path": "/machine/peripheral"}, timeout=5)
                )
                unrecorded = hotplan.unrecorded_devices(rt, present)
                lost = sorted(i.id for i in hotplan.runtime_hvinfos(rt) if i.id not in present)
        state: RunState
        if status is None:
            state = "blocked"  # alive but not answering on QMP
        else:
            state = _STATE.get(status, "paused")
            if state == "shutdown" and name not in self._stopping:
                # Powered off while nobody listened (node daemon restarted).
                self._spawn(self._user_shutdown(name, "guest-shutdown"))
        return InstanceRuntime(
            name=name,
            state=state,
            memory=memory,
            vcpus=vcpus,
            uptime=_uptime(pid),
            pid=pid,
            nics=nics,
            disks=disks,
            unrecorded_devices=unrecorded,
            lost_devices=lost,
        )

    async def all_instances_info(self) -> dict[str, InstanceRuntime]:
        names = self.files.instance_names()
        infos = await asyncio.gather(*(self.instance_info(n) for n in names))
        return {n: r for n, r in zip(names, infos, strict=True) if r is not None}

    async def cleanup_stale(self, keep_markers: list[str]) -> list[CleanedInstance]:
        """Unwire and remove what instances without a QEMU left (see :mod:`.stale`)."""
        keep = set(keep_markers)
        out: list[CleanedInstance] = []
        for name in stale.candidates(self.files):
            if launch.pid_of(self.files, name) is not None:
                continue  # running: the common case, decided without waiting for its lock
            async with self._lock(name):
                # A start (or migration target) holds the lock from its runtime
                # file and kvm-ifup until QEMU runs: decide only under it.
                if not stale.is_dead(self.files, name):
                    continue
                await self.monitors.drop(name)
                res = await stale.clean(self.files, name, keep_marker=name in keep)
            if res is not None:
                out.append(res)
        return out

    async def recover(self) -> None:
        """At node daemon start: listen to every running VM again."""
        for name in self.files.instance_names():
            if launch.pid_of(self.files, name) is not None:
                with contextlib.suppress(HypervisorError):
                    await self.instance_info(name)

    async def close(self) -> None:
        await self.monitors.close_all()
        for t in list(self._tasks):
            t.cancel()

    def console_socket(self, name: str) -> str | None:
        self.files.check_name(name)
        if launch.pid_of(self.files, name) is None:
            return None
        return self.files.control(name).serial
