"""Live migration of a QEMU machine between two nodes.

Layer: driver execution. The source hands over its runtime file; the target
rebuilds the *same* machine from it (machine type, device ids, PCI slots —
hot-added devices included) with its own paths and descriptors, and starts
it with ``-incoming``. Routed NICs are wired on the target only once the VM
runs there, and unwired on the source after it left (kvm-ifdown
``migrate-source``), so routes are never announced from the wrong node.

The ``return-path`` capability is always on: without it a target that dies
(e.g. it lacks a device) leaves the source reporting ``completed`` while the
guest runs nowhere (TESTGUEST.md). Success is also checked on the target
(``query-status``) before anyone calls it done.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm import cmdline, launch, runtime
from corral.hypervisor.kvm.describe import hv_params, instance_name, machine_from_runtime
from corral.rpc.types import InstanceSpec, MigrationStatus

if TYPE_CHECKING:
    from corral.hypervisor.kvm.driver import KvmHypervisor

DEFERRED_MODES = ("routed",)
_FINAL = ("completed", "failed", "cancelled")


def capabilities(caps: str) -> list[dict[str, Any]]:
    """``migrate-set-capabilities`` arguments: return-path plus ``migration_caps``."""
    names = ["return-path", *(c for c in caps.split(":") if c and c != "return-path")]
    return [{"capability": c, "state": True} for c in names]


def source_capabilities(caps: str) -> list[dict[str, Any]]:
    """The source's: also ``events``, so the end of the migration is an event (no polling)."""
    names = ["return-path", "events"]
    names += [c for c in caps.split(":") if c and c not in names]
    return [{"capability": c, "state": True} for c in names]


async def migration_info(drv: KvmHypervisor, name: str) -> str:
    drv.files.check_name(name)
    if launch.pid_of(drv.files, name) is None:
        raise HypervisorError(f"instance {name} is not running on this node", ECode.STATE)
    rt = drv._load_runtime(name)
    if rt is None:
        raise HypervisorError(f"instance {name} runs without a runtime file", ECode.STATE)
    return runtime.encode(rt).decode()


async def accept(
    drv: KvmHypervisor, inst: InstanceSpec, info: str, address: str, port: int
) -> None:
    drv.files.check_name(inst.name)
    rt = runtime.decode(info.encode())
    if instance_name(rt) != inst.name:
        raise HypervisorError(
            f"migration data describes {instance_name(rt)!r}, not {inst.name!r}", ECode.INVAL
        )
    # The disks as this node sees them (same cluster-wide files, own root prefix).
    paths = {d.uuid: d.path for d in inst.disks if d.path}
    for bd in rt.disks:
        path = paths.get(bd.disk.uuid)
        if path is None:
            raise HypervisorError(
                f"disk {bd.disk.uuid} of the running {inst.name} is not in its configuration "
                "(drift: see gnt-cluster verify); not migrating",
                ECode.STATE,
            )
        bd.link = path
        bd.disk.logical_id = ["loop", path]
    async with drv._lock(inst.name):
        if launch.pid_of(drv.files, inst.name) is not None:
            raise HypervisorError(f"instance {inst.name} already runs on this node", ECode.STATE)
        await drv._clear_stale(inst.name)
        m = machine_from_runtime(rt, drv.files.control(inst.name))
        rt.kvm_cmd = cmdline.base_argv(m)  # this node's paths (pid file, sockets, logs)
        await drv._launch(
            rt, inst.tags, incoming=f"tcp:{address}:{port}", defer_modes=DEFERRED_MODES
        )
        mon = await drv._monitor(inst.name)
        # Postcopy and friends must be on at both ends before the stream starts.
        extra = capabilities(hv_params(inst.hvparams or rt.hvparams).migration_caps)[1:]
        if extra:
            await mon.execute("migrate-set-capabilities", {"capabilities": extra})


async def migrate(
    drv: KvmHypervisor, inst: InstanceSpec, address: str, port: int, live: bool
) -> None:
    name = inst.name
    drv.files.check_name(name)
    rt = drv._load_runtime(name)
    if launch.pid_of(drv.files, name) is None or rt is None:
        raise HypervisorError(f"instance {name} is not running on this node", ECode.STATE)
    # Migration settings are operational, not part of the machine: the current
    # configuration's (as Ganeti), not the values the instance was started with.
    hv = hv_params(inst.hvparams or rt.hvparams)
    mon = await drv._monitor(name)
    await mon.execute(
        "migrate-set-capabilities", {"capabilities": source_capabilities(hv.migration_caps)}
    )
    await mon.execute(
        "migrate-set-parameters",
        {"max-bandwidth": hv.migration_bandwidth << 20, "downtime-limit": hv.migration_downtime},
    )
    if not live:
        await mon.execute("stop")
    await mon.execute("migrate", {"uri": f"tcp:{address}:{port}"})
    if "postcopy-ram" in hv.migration_caps.split(":"):
        # Switch to postcopy once the first pass went through (QEMU waits for it).
        await mon.execute("migrate-start-postcopy")


def _status(res: dict[str, Any]) -> MigrationStatus:
    ram = res.get("ram", {}) if isinstance(res.get("ram"), dict) else {}
    return MigrationStatus(
        status=str(res.get("status", "none")),
        transferred=int(ram.get("transferred", 0)),
        remaining=int(ram.get("remaining", 0)),
        total=int(ram.get("total", 0)),
        mbps=float(ram.get("mbps", 0.0)),
        total_time_ms=res.get("total-time"),
        downtime_ms=res.get("downtime"),
        error=str(res.get("error-desc", "")),
    )


async def status(drv: KvmHypervisor, name: str, wait: float = 0.0) -> MigrationStatus:
    drv.files.check_name(name)
    if launch.pid_of(drv.files, name) is None:
        raise HypervisorError(f"QEMU of {name} is gone on the source node", ECode.STATE)
    mon = await drv._monitor(name)
    # Registered before the first query, so an end between the two is not missed.
    ended = mon.expect("MIGRATION", lambda d: d.get("status") in _FINAL)
    try:
        st = _status(await mon.execute("query-migrate"))
        if wait > 0 and st.status not in _FINAL:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), wait)
            st = _status(await mon.execute("query-migrate"))
    finally:
        ended.cancel()
    for _ in range(10):
        if st.status != "completed" or st.total_time_ms:
            break
        # Right after the event the figures can still be zero: ask again shortly.
        await asyncio.sleep(0.002)
        st = _status(await mon.execute("query-migrate"))
    return st


async def finalize_dst(drv: KvmHypervisor, inst: InstanceSpec, success: bool, live: bool) -> None:
    name = inst.name
    drv.files.check_name(name)
    async with drv._lock(name):
        pid = launch.pid_of(drv.files, name)
        if not success:
            drv._stopping.add(name)
            try:
                await drv._terminate(name, pid, context="migrate-failed")
            finally:
                drv._stopping.discard(name)
            return
        if pid is None:
            raise HypervisorError(f"QEMU of {name} is not running on the target", ECode.STATE)
        mon = await drv._monitor(name)
        # The last pages may still be arriving: QEMU says RESUME when the guest
        # runs (registered before asking, so one between the two is not missed).
        resumed = mon.expect("RESUME")
        try:
            state = str((await mon.execute("query-status"))["status"])
            if state in ("inmigrate", "finish-migrate") and live:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(resumed), 4.0)
                state = str((await mon.execute("query-status"))["status"])
        finally:
            resumed.cancel()
        for _ in range(100):  # non-live, or no RESUME: ask until it settles
            if state not in ("inmigrate", "finish-migrate"):
                break
            await asyncio.sleep(0.01)
            state = str((await mon.execute("query-status"))["status"])
        if state == "paused" or (not live and state == "postmigrate"):
            await mon.execute("cont")  # a non-live migration arrives stopped
            state = str((await mon.execute("query-status"))["status"])
        if state != "running":
            raise HypervisorError(
                f"{name} did not start running on the target (state {state!r})", ECode.STATE
            )
        rt = drv._load_runtime(name)
        if rt is not None:
            await launch.configure_deferred(rt, drv.files, name, inst.tags, DEFERRED_MODES)
        # QEMU announces by itself after an incoming migration; once more now
        # that routed NICs are wired too (moves the MAC in every bridge at once).
        with contextlib.suppress(HypervisorError):
            await mon.execute("announce-self", {"initial": 20, "max": 60, "rounds": 3, "step": 40})


async def finalize_src(drv: KvmHypervisor, inst: InstanceSpec, success: bool, live: bool) -> None:
    name = inst.name
    drv.files.check_name(name)
    async with drv._lock(name):
        pid = launch.pid_of(drv.files, name)
        if success:
            drv._stopping.add(name)
            try:
                await drv._terminate(name, pid, context="migrate-source")
            finally:
                drv._stopping.discard(name)
            return
        if pid is None:
            raise HypervisorError(
                f"QEMU of {name} died on the source during the migration", ECode.STATE
            )
        mon = await drv._monitor(name)
        st = _status(await mon.execute("query-migrate"))
        if st.status not in _FINAL and st.status != "none":
            await mon.execute("migrate_cancel")
            for _ in range(100):
                st = _status(await mon.execute("query-migrate"))
                if st.status in _FINAL:
                    break
                await asyncio.sleep(0.02)
        state = str((await mon.execute("query-status"))["status"])
        if state in ("paused", "postmigrate", "finish-migrate"):
            await mon.execute("cont")  # the guest runs on where it was
