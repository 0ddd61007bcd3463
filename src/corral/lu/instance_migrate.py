"""Moving instances between nodes: live migration, failover, node-wide migrate/evacuate.

Layer: logical units. One :class:`Mover` does the work for one instance, so
``gnt-instance migrate|failover`` and ``gnt-node migrate|evacuate`` share it.

Migration (Ganeti's order, with Corral's checks): the source describes the
running machine (``migration_info``), the target starts it waiting
(``accept_instance``), the source sends (``instance_migrate``) while the LU
streams progress into the job log, the target confirms it *runs*
(``finalize_migration_dst``), only then the config moves the instance, and
the source stops its old copy (``finalize_migration_src``). Any failure
before the target confirmed leaves the instance running on the source and
removes what the target prepared; the error says which side failed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from corral.errors import CorralError, ECode, OpExecError, OpPrereqError, ParameterError
from corral.locking import Level
from corral.lu import ovn
from corral.lu.base import LogicalUnit, register
from corral.lu.common import (
    check_node_not_drained,
    check_node_online,
    check_node_vm_capable,
    instance_spec,
    needed_bridges,
)
from corral.lu.instance import _InstanceLU
from corral.objects import Instance, Node
from corral.opcodes import OpInstanceFailover, OpInstanceMigrate, OpNodeEvacuate, OpNodeMigrate
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import RpcResult

SHARED_TEMPLATES = ("sharedfile", "diskless")
POLL_SECONDS = 0.05
PROGRESS_EVERY = 1.0


def check_movable(inst: Instance) -> None:
    if inst.disk_template not in SHARED_TEMPLATES:
        raise OpPrereqError(
            f"instance {inst.name} has disk template {inst.disk_template}, whose disks only "
            f"its primary node has; moving it needs shared storage ({', '.join(SHARED_TEMPLATES)})",
            ECode.STATE,
        )


def pick_target(lu: LogicalUnit[Any], inst: Instance, wanted: str | None) -> Node:
    """The target node: the one asked for, or the only other usable node."""
    cfg = lu.cfg
    if wanted:
        node = cfg.expand_node(wanted)
        if node.uuid == inst.primary_node:
            raise OpPrereqError(f"instance {inst.name} is already on node {node.name}", ECode.INVAL)
        return node
    others = [
        n
        for n in cfg.data.nodes.values()
        if n.uuid != inst.primary_node and n.vm_capable and not n.offline and not n.drained
    ]
    if len(others) != 1:
        raise ParameterError(
            "target_node",
            f"{len(others)} possible target nodes for {inst.name}; give one with -n "
            "(instance allocators are not available yet)",
        )
    return others[0]


class Mover:
    """Migrate or fail over one instance on behalf of an LU (holding the locks)."""

    def __init__(self, lu: LogicalUnit[Any], inst: Instance, target: Node) -> None:
        self.lu = lu
        self.cfg = lu.cfg
        self.rpc = lu.rpc
        self.inst = inst
        self.source = self.cfg.data.nodes[inst.primary_node]
        self.target = target
        self.info: t.MigrationInfo | None = None

    async def check_target(self) -> None:
        """Target online, capable, with the memory, bridges and hypervisor setup."""
        tgt = self.target
        check_node_online(tgt)
        check_node_vm_capable(tgt)
        check_node_not_drained(tgt)
        node = self.lu.target(tgt)
        spec = instance_spec(self.cfg, self.inst)
        bridges = needed_bridges(self.cfg, self.inst.hypervisor, tgt, self.inst.nics)
        # The three questions to the target are independent: ask them at once.
        info, _, res_v = await asyncio.gather(
            self.rpc.call(
                node,
                defs.NODE_INFO,
                t.HypervisorListArgs(hypervisors=self.cfg.cluster.enabled_hypervisors),
            ),
            self.lu.check_bridges(tgt, bridges),
            self.rpc.call(
                node,
                defs.HV_PARAMS_VERIFY,
                t.HvParamsArgs(hypervisor=self.inst.hypervisor, hvparams=spec.hvparams),
            ),
        )
        free = info.get(f"querying node {tgt.name}").memory_free
        if free < spec.beparams.minmem:
            raise OpPrereqError(
                f"not enough memory on node {tgt.name} for {self.inst.name}: "
                f"needed {spec.beparams.minmem} MiB, free {free} MiB",
                ECode.NORES,
            )
        res_v.get(f"checking the hypervisor parameters on {tgt.name}")

    async def fetch_migration_info(self) -> t.MigrationInfo:
        """The source's runtime file (what the target rebuilds), kept for :meth:`migrate`."""
        res = await self.rpc.call(
            self.lu.target(self.source),
            defs.MIGRATION_INFO,
            t.InstanceNameArgs(name=self.inst.name, hypervisor=self.inst.hypervisor),
        )
        info: t.MigrationInfo = res.get(f"getting the migration data from {self.source.name}")
        self.info = info
        return info

    async def running_on(self, node: Node) -> t.InstanceRuntime | None:
        res = await self.rpc.call(
            self.lu.target(node),
            defs.INSTANCE_INFO,
            t.InstanceNameArgs(name=self.inst.name, hypervisor=self.inst.hypervisor),
        )
        return res.get(f"asking {node.name} about {self.inst.name}").runtime

    def _move_config(self) -> None:
        inst = self.cfg.copy(self.cfg.data.instances[self.inst.uuid])
        inst.primary_node = self.target.uuid
        self.inst = self.cfg.update(inst)

    async def _finalize(self, node: Node, call: Any, success: bool, live: bool) -> RpcResult[Any]:
        return await self.rpc.call(
            self.lu.target(node),
            call,
            t.FinalizeMigrationArgs(
                instance=instance_spec(self.cfg, self.inst), success=success, live=live
            ),
        )

    async def _abort(self, live: bool, why: str) -> OpExecError:
        """Undo the target side, let the source run on; the error to raise."""
        dst = await self._finalize(self.target, defs.FINALIZE_MIGRATION_DST, False, live)
        src = await self._finalize(self.source, defs.FINALIZE_MIGRATION_SRC, False, live)
        notes = []
        try:
            await ovn.revert_migration(self.cfg, self.inst, self.source.name)
        except CorralError as err:
            notes.append(
                f"OVN ports not reverted to {self.source.name} ({err}); "
                f"gnt-instance migrate --cleanup {self.inst.name} repairs them"
            )
        if dst.failed:
            notes.append(f"cleaning up {self.target.name} failed: {dst.fail_msg}")
        if src.failed:
            notes.append(f"the source {self.source.name} reports: {src.fail_msg}")
            where = "check it with gnt-instance info; gnt-instance failover may be needed"
        else:
            where = f"the instance keeps running on {self.source.name}"
        return OpExecError(
            f"migration of {self.inst.name} to {self.target.name} failed: {why}; {where}"
            + ("; " + "; ".join(notes) if notes else ""),
            ECode.ENVIRON,
        )

    async def migrate(self, live: bool) -> None:
        lu, inst = self.lu, self.inst
        src, dst = lu.target(self.source), lu.target(self.target)
        spec = instance_spec(self.cfg, inst)
        port = int(spec.hvparams.get("migration_port", 8102))
        lu.log_info(
            f"Migrating instance {inst.name} ({'live' if live else 'non-live'}) "
            f"from {self.source.name} to {self.target.name}"
        )
        info = self.info if self.info is not None else await self.fetch_migration_info()
        # OVN: the port is requested on both chassis before the target plugs
        # its tap; the target's binding stays blocked until QEMU's RARP.
        ports = await ovn.begin_migration(self.cfg, inst, self.source.name, self.target.name)
        if ports:
            lu.log_info(
                f"OVN ports {', '.join(ports)}: requested on {self.source.name} and "
                f"{self.target.name}, activation on RARP"
            )
        acc = await self.rpc.call(
            dst,
            defs.ACCEPT_INSTANCE,
            t.AcceptInstanceArgs(
                instance=spec, info=info, address=self.target.primary_ip, port=port
            ),
        )
        if acc.failed:
            raise await self._abort(live, f"the target could not prepare: {acc.fail_msg}")
        start = time.monotonic()
        res = await self.rpc.call(
            src,
            defs.INSTANCE_MIGRATE,
            t.InstanceMigrateArgs(
                instance=spec, address=self.target.primary_ip, port=port, live=live
            ),
        )
        if res.failed:
            raise await self._abort(live, f"the source could not start sending: {res.fail_msg}")
        st = await self._follow(src)
        if st.status != "completed":
            why = st.error or f"QEMU reports {st.status}"
            raise await self._abort(live, why)
        fin = await self._finalize(self.target, defs.FINALIZE_MIGRATION_DST, True, live)
        if fin.failed:
            raise await self._abort(
                live, f"the instance does not run on the target: {fin.fail_msg}"
            )
        self._move_config()
        lu.log_info(
            f"Migration completed in {time.monotonic() - start:.2f} s"
            + (
                f" (QEMU: total {st.total_time_ms} ms, downtime {st.downtime_ms} ms)"
                if st.total_time_ms is not None
                else ""
            )
        )
        # The guest runs on the target (checked above) and the source QEMU is
        # spent (post-migrate, it cannot resume): recording the move and
        # stopping the old copy are independent, so they overlap.
        _, done = await asyncio.gather(
            self.cfg.commit(),
            self._finalize(self.source, defs.FINALIZE_MIGRATION_SRC, True, live),
        )
        # OVN: narrowed to the target only now that the source's tap is gone
        # (its ovn-controller released the port). Narrowing while the source
        # still has it races the two controllers: the source, not yet aware of
        # the target's claim, clears the binding once more (seen here: chassis
        # node1 -> node2 -> none -> node2). The target carries the traffic
        # since QEMU's RARP either way.
        try:
            await ovn.finish_migration(self.cfg, self.inst, self.target.name)
        except CorralError as err:
            lu.log_warning(
                f"OVN ports not narrowed to {self.target.name}: {err}",
                hint=f"gnt-instance migrate --cleanup {inst.name}",
            )
        if done.failed:
            lu.log_warning(
                f"the old copy on {self.source.name} could not be stopped: {done.fail_msg}",
                hint=f"gnt-instance migrate --cleanup {inst.name}",
            )

    async def _follow(self, src: Any) -> t.MigrationStatus:
        """Poll the source until the migration ends; progress into the job log."""
        last_log = 0.0
        # A long poll: the node answers when the migration ends, or after
        # PROGRESS_EVERY with the progress — completion is seen at once.
        args = t.MigrationStatusArgs(
            name=self.inst.name, hypervisor=self.inst.hypervisor, wait=PROGRESS_EVERY
        )
        while True:
            res = await self.rpc.call(src, defs.INSTANCE_MIGRATION_STATUS, args)
            if res.failed:
                return t.MigrationStatus(status="failed", error=f"source: {res.fail_msg}")
            assert res.payload is not None
            st = res.payload
            if st.status in ("completed", "failed", "cancelled"):
                return st
            now = time.monotonic()
            if st.total and now - last_log >= PROGRESS_EVERY * 0.9:
                last_log = now
                done = 100.0 * (st.total - st.remaining) / st.total
                self.lu.log_info(
                    f"* memory transfer progress: {done:.1f} % ({st.mbps:.1f} Mbit/s, "
                    f"{st.remaining >> 20} MiB remaining)"
                )
            if st.status in ("none", "setup"):
                await asyncio.sleep(POLL_SECONDS)  # not started yet: nothing to wait on

    async def cleanup(self) -> None:
        """Settle a half-finished migration from what both nodes report."""
        on_src = await self.running_on(self.source)
        on_dst = await self.running_on(self.target)
        src_runs = on_src is not None and on_src.state == "running"
        dst_runs = on_dst is not None and on_dst.state == "running"
        if dst_runs and not src_runs:
            self.lu.log_info(f"Instance runs on {self.target.name}: recording it there")
            self._move_config()
            await self.cfg.commit()
            # What the interrupted job did not get to: routed NICs, the MAC announce.
            fin = await self._finalize(self.target, defs.FINALIZE_MIGRATION_DST, True, True)
            if fin.failed:
                self.lu.log_warning(f"finishing the target side failed: {fin.fail_msg}")
            old = await self._finalize(self.source, defs.FINALIZE_MIGRATION_SRC, True, True)
            if old.failed:
                self.lu.log_warning(
                    f"the old copy on {self.source.name} could not be stopped: {old.fail_msg}"
                )
            await self._settle_ports(self.target)  # after the source let go (see migrate)
        elif src_runs and not dst_runs:
            self.lu.log_info(
                f"Instance runs on {self.source.name}: removing leftovers on the target"
            )
            await self._finalize(self.target, defs.FINALIZE_MIGRATION_DST, False, True)
            await self._settle_ports(self.source)
        elif src_runs and dst_runs:
            raise OpExecError(
                f"instance {self.inst.name} runs on both {self.source.name} and "
                f"{self.target.name}; stop one copy by hand first",
                ECode.STATE,
            )
        else:
            raise OpExecError(
                f"instance {self.inst.name} runs on neither node; "
                "use gnt-instance startup or failover",
                ECode.STATE,
            )

    async def _settle_ports(self, node: Node) -> None:
        ports = await ovn.sync_ports(self.cfg, self.inst, node.name)
        if ports:
            self.lu.log_info(f"OVN ports {', '.join(ports)}: bound to {node.name} alone")

    async def failover(self, timeout: float, ignore_consistency: bool) -> None:
        lu, inst = self.lu, self.inst
        if not self.source.offline:
            lu.log_info(f"Shutting down {inst.name} on {self.source.name}")
            res = await self.rpc.call(
                lu.target(self.source),
                defs.INSTANCE_SHUTDOWN,
                t.InstanceStopArgs(instance=instance_spec(self.cfg, inst), timeout=timeout),
            )
            if res.failed:
                if not ignore_consistency:
                    raise OpExecError(
                        f"could not shut down {inst.name} on {self.source.name}: {res.fail_msg}; "
                        "nothing changed (--ignore-consistency proceeds anyway)",
                        ECode.ENVIRON,
                    )
                lu.log_warning(
                    f"ignoring the failed shutdown on {self.source.name}: {res.fail_msg}"
                )
        else:
            lu.log_warning(f"source node {self.source.name} is offline; not contacted")
        self._move_config()
        await self.cfg.commit()
        await self._settle_ports(self.target)  # the ports follow the primary node
        if inst.admin_state != "up":
            return
        lu.log_info(f"Starting {inst.name} on {self.target.name}")
        res = await self.rpc.call(
            lu.target(self.target),
            defs.INSTANCE_START,
            t.InstanceStartArgs(instance=instance_spec(self.cfg, self.inst)),
        )
        if res.failed:
            raise OpExecError(
                f"could not start {inst.name} on {self.target.name}: {res.fail_msg} "
                "(its primary node is now that node)",
                res.error.code if res.error else ECode.ENVIRON,
            )


def migration_live(inst_hv: dict[str, Any], mode: str | None, live: bool | None) -> bool:
    if mode is not None and live is not None and (mode == "live") != live:
        raise ParameterError("mode", "mode and live disagree")
    if live is not None:
        return live
    if mode is not None:
        return mode == "live"
    return bool(inst_hv.get("migration_mode", "live") == "live")


class _MoveLU(_InstanceLU):
    def expand_names(self) -> None:
        super().expand_names()
        inst = self.cfg.data.instances[self.inst_uuid]
        self.target_node = pick_target(self, inst, self.op.target_node)

    def declare_locks(self, level: Level) -> None:
        super().declare_locks(level)
        if level in (Level.NODE, Level.NODE_RES):
            names = self.needed_locks[level]
            assert isinstance(names, list)
            self.needed_locks[level] = [*names, self.target_node.uuid]

    def check_prereq(self) -> None:
        super().check_prereq()
        check_movable(self.inst)
        self.mover = Mover(self, self.inst, self.cfg.data.nodes[self.target_node.uuid])

    def build_hooks_env(self) -> dict[str, str]:
        env = super().build_hooks_env()
        env["OLD_PRIMARY"] = self.pnode.name
        env["NEW_PRIMARY"] = self.target_node.name
        return env

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.cluster.master_node, self.inst.primary_node, self.target_node.uuid]
        return nodes, nodes


@register(OpInstanceMigrate)
class LUInstanceMigrate(_MoveLU):
    HPATH = "instance-migrate"

    async def check_prereq_nodes(self) -> None:
        self.failover_instead = False
        if self.op.cleanup:
            return
        check_node_online(self.pnode)
        # Independent questions to the two nodes: at once. The source's runtime
        # file is fetched now too (the target is built from it).
        running, target_ok, info = await asyncio.gather(
            self.is_running(),
            self.mover.check_target(),
            self.mover.fetch_migration_info(),
            return_exceptions=True,
        )
        if isinstance(running, BaseException):
            raise running
        if not running:
            if self.op.allow_failover:
                self.failover_instead = True
                if self.inst.admin_state == "up" and isinstance(target_ok, BaseException):
                    raise target_ok
                return
            raise OpPrereqError(
                f"instance {self.inst.name} is not running; nothing to migrate "
                "(gnt-instance failover moves a stopped instance)",
                ECode.STATE,
            )
        if isinstance(target_ok, BaseException):
            raise target_ok
        if isinstance(info, BaseException):
            raise info

    async def exec(self) -> None:
        hv = instance_spec(self.cfg, self.inst).hvparams
        live = migration_live(hv, self.op.mode, self.op.live)
        if self.op.cleanup:
            await self.mover.cleanup()
        elif self.failover_instead:
            self.log_warning("the instance is not running: failing over instead")
            await self.mover.failover(120.0, False)
        else:
            await self.mover.migrate(live)


@register(OpInstanceFailover)
class LUInstanceFailover(_MoveLU):
    HPATH = "instance-failover"

    async def check_prereq_nodes(self) -> None:
        if self.inst.admin_state == "up":
            await self.mover.check_target()

    async def exec(self) -> None:
        await self.mover.failover(self.op.shutdown_timeout, self.op.ignore_consistency)


class _NodeMovesLU(LogicalUnit[Any]):
    """Move every primary instance off a node, one after the other."""

    HTYPE = "NODE"

    def expand_names(self) -> None:
        self.node = self.cfg.expand_node(self.op.node_name)
        self.insts = [i for i in self.cfg.node_instances(self.node.uuid)]
        self.needed_locks[Level.INSTANCE] = [i.name for i in self.insts]
        self.needed_locks[Level.NODE] = list(self.cfg.data.nodes)
        self.share_locks[Level.NODE] = True
        self.share_locks[Level.NODE_RES] = True

    def check_prereq(self) -> None:
        for inst in self.insts:
            check_movable(inst)
        self.targets = {i.uuid: pick_target(self, i, self._wanted_target()) for i in self.insts}

    def _wanted_target(self) -> str | None:
        return None

    def build_hooks_env(self) -> dict[str, str]:
        return {"NODE_NAME": self.node.name}


@register(OpNodeMigrate)
class LUNodeMigrate(_NodeMovesLU):
    HPATH = "node-migrate"

    def _wanted_target(self) -> str | None:
        target: str | None = self.op.target_node
        return target

    async def exec(self) -> list[str]:
        moved = []
        for inst in self.insts:
            mover = Mover(self, self.cfg.data.instances[inst.uuid], self.targets[inst.uuid])
            if await mover.running_on(mover.source) is None:
                self.log_info(f"{inst.name} is not running: failing it over")
                await mover.failover(120.0, False)
            else:
                await mover.check_target()
                hv = instance_spec(self.cfg, mover.inst).hvparams
                await mover.migrate(migration_live(hv, self.op.mode, self.op.live))
            moved.append(inst.name)
        return moved


@register(OpNodeEvacuate)
class LUNodeEvacuate(_NodeMovesLU):
    HPATH = "node-evacuate"

    def _wanted_target(self) -> str | None:
        target: str | None = self.op.remote_node
        return target

    def check_prereq(self) -> None:
        if self.op.mode == "secondary-only":
            self.insts = []  # shared storage: no instance has a secondary here
        super().check_prereq()

    async def exec(self) -> list[str]:
        moved = []
        for inst in self.insts:
            mover = Mover(self, self.cfg.data.instances[inst.uuid], self.targets[inst.uuid])
            if await mover.running_on(mover.source) is not None:
                await mover.check_target()
                hv = instance_spec(self.cfg, mover.inst).hvparams
                await mover.migrate(migration_live(hv, None, None))
            else:
                await mover.failover(120.0, False)
            moved.append(inst.name)
        return moved
