"""Bring OVN ports in line with where instances really run (the watcher's OVN pass).

Layer: logical units. A master killed between the migration workflow's
steps leaves a port requested on two chassis, or on the wrong one; an
instance removal interrupted after the config change leaves a port without
a NIC. This LU asks every online node which instances it runs, and then, per
NIC in mode ``ovn``, states the whole wanted binding again (one chassis:
where the instance runs, else its primary node). Instance locks are taken
shared, so a migration in progress is waited for, never "repaired".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError
from corral.locking import Level
from corral.lu import ovn
from corral.lu.base import ALL_SET, LogicalUnit, register
from corral.objects import Instance, Node
from corral.opcodes import OpClusterSyncOvn
from corral.rpc import defs
from corral.rpc import types as t

if TYPE_CHECKING:
    from corral.network.ovn_nb import NbClient, PortState


@dataclass
class SyncReport:
    bound: list[str] = field(default_factory=list)  # "port -> chassis" changes made
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # with the reason

    def as_dict(self) -> dict[str, list[str]]:
        return {"bound": self.bound, "deleted": self.deleted, "skipped": self.skipped}


def wanted_chassis(primary: str, present: dict[str, str]) -> str | None:
    """The one chassis an instance's ports belong to; None if that can't be told.

    ``present``: node name -> hypervisor state, for every node that has a
    copy. The copy that *runs* wins (after a migration the source's copy is
    paused in post-migrate); no copy at all: the primary node, where it starts.
    """
    running = [n for n, st in present.items() if st == "running"]
    if len(running) == 1:
        return running[0]
    if not running and len(present) <= 1:
        return next(iter(present), primary)
    return None


@register(OpClusterSyncOvn)
class LUClusterSyncOvn(LogicalUnit[OpClusterSyncOvn]):
    def expand_names(self) -> None:
        self.needed_locks[Level.INSTANCE] = ALL_SET  # all, shared
        self.share_locks[Level.INSTANCE] = True

    async def _running(self) -> dict[str, dict[str, str]]:
        """Instance name -> {node name: state} of the nodes that have a copy."""
        nodes = [n for n in self.cfg.data.nodes.values() if not n.offline and n.vm_capable]
        hvs = list(self.cfg.cluster.enabled_hypervisors)

        async def one(node: Node) -> tuple[Node, Any]:
            res = await self.rpc.call(
                self.target(node), defs.ALL_INSTANCES_INFO, t.HypervisorListArgs(hypervisors=hvs)
            )
            return node, res

        where: dict[str, dict[str, str]] = {}
        for node, res in await asyncio.gather(*(one(n) for n in nodes)):
            if res.failed:
                raise CorralError(f"cannot tell what runs on {node.name}: {res.fail_msg}")
            for name, rt in res.payload.instances.items():
                if rt.state != "shutdown":
                    where.setdefault(name, {})[node.name] = rt.state
        return where

    async def exec(self) -> dict[str, list[str]]:
        report = SyncReport()
        if not self.cfg.cluster.ovn_nb:
            return report.as_dict()  # no OVN here (quietly: the watcher asks every pass)
        where = await self._running()
        wanted: dict[str, tuple[Instance, str, ovn.OvnNic]] = {}
        for inst in self.cfg.data.instances.values():
            try:
                nics = ovn.ovn_nics(self.cfg, inst)
            except CorralError as err:
                report.skipped.append(f"{inst.name}: {err}")
                continue
            primary = self.cfg.data.nodes[inst.primary_node].name
            present = where.get(inst.name, {})
            chassis = wanted_chassis(primary, present)
            if chassis is None and nics:
                copies = ", ".join(f"{n} ({st})" for n, st in sorted(present.items()))
                report.skipped.append(
                    f"{inst.name}: copies on {copies}; "
                    "settle it with gnt-instance migrate --cleanup"
                )
                continue
            for o in nics:
                assert chassis is not None
                wanted[o.nic.uuid] = (inst, chassis, o)
        dry = self.op.dry_run
        # Any NIC of any instance, whatever its mode now: its port is not stale.
        configured = {n.uuid for i in self.cfg.data.instances.values() for n in i.nics}

        def run(nb: NbClient) -> None:
            ours: dict[str, PortState] = {
                p.name: p for p in nb.ports_with_key(ovn.CORRAL_INSTANCE_KEY)
            }
            for name, (inst, chassis, o) in sorted(wanted.items()):
                have = ours.get(name) or nb.get_port(name)
                if (
                    have is not None
                    and have.requested_chassis == (chassis,)
                    and not have.activation_strategy
                ):
                    continue
                was = ",".join(have.requested_chassis) if have else "no port"
                report.bound.append(f"{name} ({inst.name}): {was} -> {chassis}")
                if not dry:
                    nb.ensure_switch(o.switch, o.network_uuid)
                    nb.ensure_port(o.switch, ovn.port_spec(inst, o, chassis))
            for name, p in sorted(ours.items()):
                if name not in wanted and name not in configured:
                    report.deleted.append(f"{name} (was {p.instance})")
                    if not dry:
                        nb.delete_port(name)

        await ovn.nb_call(self.cfg, run)
        for line in report.bound:
            self.log_info(f"OVN port {line}")
        for line in report.deleted:
            self.log_info(f"OVN port {line}: its NIC is gone, deleted")
        for line in report.skipped:
            self.log_warning(f"OVN ports not checked: {line}")
        return report.as_dict()
