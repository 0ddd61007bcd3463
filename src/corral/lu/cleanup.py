"""Cleaning up after dead instances on the nodes (the watcher's master side).

Layer: logical units. One RPC per online node, in parallel; the node undoes
what instances without a hypervisor process left (kvm-ifdown, run files) and
says what it did. No cluster locks: like a query, this only reads the config
(which instances belong on which node), and the node side decides under each
instance's own lock, so a start or migration in progress is never mistaken
for a dead instance.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from corral.lu.base import LogicalUnit, register
from corral.objects import Node
from corral.opcodes import OpClusterCleanupStale
from corral.rpc import defs
from corral.rpc import types as t


def describe(node: str, c: t.CleanedInstance) -> str:
    """One line for the job log and the watcher's output."""
    what = [f"kvm-ifdown {', '.join(c.taps)} (shutdown)"] if c.taps else []
    if c.files:
        what.append(f"removed {', '.join(c.files)}")
    if c.marker_kept:
        what.append("kept its user-shutdown marker")
    text = f"{node}: cleaned up after dead instance {c.name}: {'; '.join(what) or 'nothing'}"
    return text + "".join(f"\n  problem: {e}" for e in c.errors)


@register(OpClusterCleanupStale)
class LUClusterCleanupStale(LogicalUnit[OpClusterCleanupStale]):
    def expand_names(self) -> None:
        if self.op.nodes:
            self.nodes = [self.cfg.expand_node(n) for n in self.op.nodes]
        else:
            self.nodes = sorted(self.cfg.data.nodes.values(), key=lambda n: n.name)

    async def _one(self, node: Node, hypervisors: list[str]) -> dict[str, Any]:
        mine = sorted(
            i.name for i in self.cfg.data.instances.values() if i.primary_node == node.uuid
        )
        res = await self.rpc.call(
            self.target(node),
            defs.NODE_CLEANUP_STALE,
            t.NodeCleanupArgs(hypervisors=hypervisors, instances=mine),
        )
        if res.failed:
            self.log_warning(f"{node.name}: cleanup failed: {res.fail_msg}")
            return {"node": node.name, "cleaned": [], "error": res.fail_msg}
        assert res.payload is not None
        for c in res.payload.cleaned:
            self.log_info(describe(node.name, c))
        return {
            "node": node.name,
            "cleaned": msgspec.to_builtins(res.payload.cleaned),
            "error": None,
        }

    async def exec(self) -> list[dict[str, Any]]:
        """Per node: ``{"node", "cleaned": [CleanedInstance as a dict], "error"}``."""
        online = [n for n in self.nodes if not n.offline]
        for n in self.nodes:
            if n.offline:
                self.log_info(f"{n.name}: offline, skipped")
        hypervisors = list(self.cfg.cluster.enabled_hypervisors)
        return list(await asyncio.gather(*(self._one(n, hypervisors) for n in online)))
