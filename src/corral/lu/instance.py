"""Instance lifecycle: remove, start, stop, reboot, rename, info (create: instance_create).

Layer: logical units. Every node action goes through an RPC to the
instance's primary node.
"""

from __future__ import annotations

from typing import Any

import msgspec

from corral import hypervisor, objects, params
from corral.errors import CorralError, ECode, OpExecError, OpPrereqError
from corral.locking import Level
from corral.lu import ovn
from corral.lu.base import LogicalUnit, register
from corral.lu.common import (
    check_node_online,
    instance_hook_env,
    instance_spec,
)
from corral.lu.drift import instance_drift
from corral.lu.instance_console import vnc_console
from corral.objects import Instance, Node
from corral.opcodes import (
    OpInstanceQueryData,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceRename,
    OpInstanceShutdown,
    OpInstanceStartup,
)
from corral.rpc import defs
from corral.rpc import types as t


class _InstanceLU(LogicalUnit[Any]):
    """An LU on one existing instance: locks it, its primary node and node-res."""

    HTYPE = "INSTANCE"
    inst: Instance
    _pre_env: dict[str, str]

    def expand_names(self) -> None:
        inst = self.cfg.expand_instance(self.op.instance_name)
        self.inst_uuid = inst.uuid
        self.needed_locks[Level.INSTANCE] = [inst.name]
        # The node is only read (its state, its free memory): share it, so
        # operations on different instances of one node run side by side.
        self.share_locks[Level.NODE] = True
        self.share_locks[Level.NODE_RES] = True

    def declare_locks(self, level: Level) -> None:
        if level in (Level.NODE, Level.NODE_RES):
            inst = self.cfg.data.instances.get(self.inst_uuid)
            self.needed_locks[level] = [inst.primary_node] if inst else []

    def check_prereq(self) -> None:
        inst = self.cfg.data.instances.get(self.inst_uuid)
        if inst is None:
            raise OpPrereqError(f"instance '{self.op.instance_name}' was removed", ECode.NOENT)
        self.inst = inst
        self.pnode = self.cfg.data.nodes[inst.primary_node]

    def build_hooks_env(self) -> dict[str, str]:
        inst = self.cfg.data.instances.get(self.inst_uuid)
        if inst is None:  # removed by this LU: post-hooks see the instance as it was
            return self._pre_env
        self._pre_env = instance_hook_env(self.cfg, inst)
        return self._pre_env

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.cluster.master_node, self.inst.primary_node]
        return nodes, nodes

    def set_admin_state(self, state: objects.AdminState) -> None:
        if self.inst.admin_state != state:
            inst = self.cfg.copy(self.inst)
            inst.admin_state = state
            self.inst = self.cfg.update(inst)

    async def node_free_memory(self, node: Node) -> int:
        res = await self.rpc.call(
            self.target(node),
            defs.NODE_INFO,
            t.HypervisorListArgs(hypervisors=self.cfg.cluster.enabled_hypervisors),
        )
        return res.get("querying node memory").memory_free

    async def is_running(self) -> bool:
        res = await self.rpc.call(
            self.target(self.pnode),
            defs.INSTANCE_INFO,
            t.InstanceNameArgs(name=self.inst.name, hypervisor=self.inst.hypervisor),
        )
        rt = res.get("querying instance state").runtime
        # "shutdown": the guest powered itself off (user shutdown); not running.
        return rt is not None and rt.state != "shutdown"


@register(OpInstanceStartup)
class LUInstanceStartup(_InstanceLU):
    HPATH = "instance-start"

    def check_prereq(self) -> None:
        super().check_prereq()
        if self.inst.admin_state == "offline":
            raise OpPrereqError(f"instance {self.inst.name} is marked offline", ECode.STATE)
        if self.op.hvparams:
            hypervisor.params_for(self.inst.hypervisor).check_overrides(
                self.op.hvparams, "hvparams"
            )
        if self.op.beparams:
            params.BE.check_overrides(self.op.beparams, "beparams")
        check_node_online(self.pnode)

    async def exec(self) -> None:
        spec = instance_spec(self.cfg, self.inst, self.op.hvparams, self.op.beparams)
        if await self.is_running():
            self.log_info(f"Instance {self.inst.name} is already running")
            self.set_admin_state("up")
            return
        if not self.op.force:
            free = await self.node_free_memory(self.pnode)
            if free < spec.beparams.minmem:
                raise OpPrereqError(
                    f"not enough memory on node {self.pnode.name} to start "
                    f"{self.inst.name}: needed {spec.beparams.minmem} MiB, free {free} MiB",
                    ECode.NORES,
                )
        self.set_admin_state("up")
        await self.cfg.commit()
        # OVN ports exist and are bound here before the NICs appear (idempotent: repairs).
        await ovn.sync_ports(self.cfg, self.inst, self.pnode.name)
        res = await self.rpc.call(
            self.target(self.pnode),
            defs.INSTANCE_START,
            t.InstanceStartArgs(instance=spec, startup_paused=self.op.startup_paused),
        )
        if res.failed:
            raise OpExecError(
                f"could not start instance {self.inst.name} on node "
                f"{self.pnode.name}: {res.fail_msg or 'node offline'}"
            )


@register(OpInstanceShutdown)
class LUInstanceShutdown(_InstanceLU):
    HPATH = "instance-stop"

    def check_prereq(self) -> None:
        super().check_prereq()
        if not self.op.ignore_offline_nodes:
            check_node_online(self.pnode)

    async def exec(self) -> None:
        if not self.op.no_remember:
            self.set_admin_state("down")
            await self.cfg.commit()
        if self.pnode.offline:
            self.log_warning(f"primary node {self.pnode.name} is offline; not contacted")
            return
        spec = instance_spec(self.cfg, self.inst)
        res = await self.rpc.call(
            self.target(self.pnode),
            defs.INSTANCE_SHUTDOWN,
            t.InstanceStopArgs(instance=spec, timeout=self.op.timeout, force=self.op.force),
        )
        if res.failed:
            raise OpExecError(f"could not shut down instance {self.inst.name}: {res.fail_msg}")


@register(OpInstanceReboot)
class LUInstanceReboot(_InstanceLU):
    HPATH = "instance-reboot"

    def check_prereq(self) -> None:
        super().check_prereq()
        if self.inst.admin_state == "offline":
            raise OpPrereqError(f"instance {self.inst.name} is marked offline", ECode.STATE)
        check_node_online(self.pnode)

    async def exec(self) -> None:
        spec = instance_spec(self.cfg, self.inst)
        node = self.target(self.pnode)
        running = await self.is_running()
        if running and self.op.reboot_type in ("soft", "hard"):
            res = await self.rpc.call(
                node,
                defs.INSTANCE_REBOOT,
                t.InstanceRebootArgs(
                    instance=spec, reboot_type=self.op.reboot_type, timeout=self.op.shutdown_timeout
                ),
            )
            res.get(f"rebooting instance {self.inst.name}")
        else:
            if running:
                res_stop = await self.rpc.call(
                    node,
                    defs.INSTANCE_SHUTDOWN,
                    t.InstanceStopArgs(instance=spec, timeout=self.op.shutdown_timeout),
                )
                res_stop.get(f"stopping instance {self.inst.name} for a full reboot")
            await ovn.sync_ports(self.cfg, self.inst, self.pnode.name)
            res_start = await self.rpc.call(
                node, defs.INSTANCE_START, t.InstanceStartArgs(instance=spec)
            )
            res_start.get(f"starting instance {self.inst.name}")
        self.set_admin_state("up")


@register(OpInstanceRemove)
class LUInstanceRemove(_InstanceLU):
    HPATH = "instance-remove"

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.cluster.master_node, self.inst.primary_node]
        return nodes, [self.cfg.cluster.master_node]

    async def exec(self) -> None:
        inst = self.inst
        spec = instance_spec(self.cfg, inst)
        node = self.target(self.pnode)
        try:
            self.ovn_ports = ovn.ovn_nics(self.cfg, inst)
        except OpPrereqError:
            self.ovn_ports = []  # never had a port: nothing to delete
        self.log_info(f"Shutting down instance {inst.name} on node {self.pnode.name}")
        res = await self.rpc.call(
            node,
            defs.INSTANCE_SHUTDOWN,
            t.InstanceStopArgs(instance=spec, timeout=self.op.shutdown_timeout),
        )
        if res.failed:
            if not self.op.ignore_failures:
                raise OpExecError(
                    f"could not shut down instance {inst.name} on "
                    f"{self.pnode.name}: {res.fail_msg}; nothing was removed"
                )
            self.log_warning(f"ignoring failure to stop {inst.name}: {res.fail_msg}")
        self.log_info("Removing block devices for instance " + inst.name)
        for d in spec.disks:
            r = await self.rpc.call(node, defs.BLOCKDEV_REMOVE, t.DiskRemoveArgs(disk=d))
            if r.failed:
                if not self.op.ignore_failures:
                    raise OpExecError(
                        f"could not remove disk {d.index} of {inst.name}: {r.fail_msg}"
                    )
                self.log_warning(f"could not remove disk {d.index}: {r.fail_msg}")
        self.log_info(f"Removing instance {inst.name} out of cluster config")
        self.cfg.remove_instance(inst.uuid)
        await self.cfg.commit()
        # After the config: a crash in between leaves a stale port the watcher removes.
        try:
            await ovn.drop_ports(self.cfg, [o.nic.uuid for o in self.ovn_ports])
        except CorralError as err:
            self.log_warning(f"could not delete the OVN ports of {inst.name}: {err}")


@register(OpInstanceRename)
class LUInstanceRename(_InstanceLU):
    HPATH = "instance-rename"

    def expand_names(self) -> None:
        super().expand_names()
        self.needed_locks[Level.INSTANCE] = [self.op.instance_name, self.op.new_name]

    def check_prereq(self) -> None:
        super().check_prereq()
        if self.op.new_name == self.inst.name:
            raise OpPrereqError("the new name is the same as the old one", ECode.INVAL)
        if self.cfg.instance_by_name(self.op.new_name) is not None:
            raise OpPrereqError(f"instance '{self.op.new_name}' already exists", ECode.EXISTS)
        if self.inst.admin_state == "up":
            raise OpPrereqError(f"instance {self.inst.name} is running; stop it first", ECode.STATE)

    def build_hooks_env(self) -> dict[str, str]:
        env = super().build_hooks_env()
        env["INSTANCE_NEW_NAME"] = self.op.new_name
        return env

    async def exec(self) -> str:
        if await self.is_running():
            raise OpExecError(
                f"instance {self.inst.name} is still running on {self.pnode.name}; stop it first"
            )
        old_name = self.inst.name
        inst = self.cfg.copy(self.inst)
        inst.name = self.op.new_name
        self.inst = self.cfg.update(inst)
        from corral.lu.os import run_rename  # (lu.os builds on this module)

        await run_rename(self, self.inst, old_name)
        return inst.name


@register(OpInstanceQueryData)
class LUInstanceQueryData(LogicalUnit[OpInstanceQueryData]):
    def expand_names(self) -> None:
        if self.op.instances:
            self.wanted = [self.cfg.expand_instance(n).uuid for n in self.op.instances]
        else:
            self.wanted = list(self.cfg.data.instances)
        if self.op.use_locking:
            self.needed_locks[Level.INSTANCE] = [
                self.cfg.data.instances[u].name for u in self.wanted
            ]
            self.share_locks[Level.INSTANCE] = True

    async def exec(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for u in self.wanted:
            inst = self.cfg.data.instances.get(u)
            if inst is None:
                continue
            node = self.cfg.data.nodes[inst.primary_node]
            run_state: str = "unknown"
            live: dict[str, Any] | None = None
            pending: list[str] = []
            if not self.op.static:
                if node.offline:
                    run_state = "node offline"
                else:
                    res = await self.rpc.call(
                        self.target(node),
                        defs.INSTANCE_INFO,
                        t.InstanceNameArgs(name=inst.name, hypervisor=inst.hypervisor),
                    )
                    if res.failed:
                        run_state = f"unknown (node {node.name}: {res.fail_msg})"
                    else:
                        assert res.payload is not None
                        rt = res.payload.runtime
                        run_state = rt.state if rt else "down"
                        if rt is not None and rt.pid is not None:
                            live = {
                                k: v
                                for k, v in msgspec.structs.asdict(rt).items()
                                if not isinstance(v, list)  # devices: shown as pending below
                            }
                            pending = [d.message for d in instance_drift(self.cfg, inst, rt)]
            spec = instance_spec(self.cfg, inst)
            group = self.cfg.node_group(node)
            out[inst.name] = {
                "name": inst.name,
                "uuid": inst.uuid,
                "config_state": inst.admin_state,
                "run_state": run_state,
                "pnode": node.name,
                "snodes": [],
                "os": inst.os,
                "hypervisor": inst.hypervisor,
                "disk_template": inst.disk_template,
                "hv_instance": inst.hvparams,
                "hv_actual": spec.hvparams,
                "be_instance": inst.beparams,
                "be_actual": msgspec.structs.asdict(spec.beparams),
                "os_instance": inst.osparams,
                "nics": [
                    {
                        "idx": n.index,
                        "name": n.name,
                        "uuid": n.uuid,
                        "mac": n.mac,
                        "ip": n.ip,
                        **msgspec.structs.asdict(n.nicparams),
                    }
                    for n in spec.nics
                ],
                "disks": [
                    {
                        "idx": d.index,
                        "name": d.name,
                        "uuid": d.uuid,
                        "size": d.size,
                        "mode": d.mode,
                        "dev_type": d.dev_type,
                        "path": d.path,
                    }
                    for d in spec.disks
                ],
                "runtime": live,
                "pending": pending,
                "network_port": inst.network_port,
                "console": vnc_console(
                    node.primary_ip,
                    str(spec.hvparams.get("vnc_bind_address", "")),
                    inst.network_port,
                ),
                "tags": inst.tags,
                "ctime": inst.ctime,
                "mtime": inst.mtime,
                "serial_no": inst.serial_no,
                "group": group.name,
            }
        return out
