"""The processor: runs one opcode through its logical unit.

Layer: master core (imports lu.base, locking, hooks, config). The steps are
Ganeti's: expand names → acquire the declared locks level by level (cluster
< instance < node group < node < node-res < network) → check prerequisites
(then those that ask nodes) → (dry run: stop here) → pre-hooks → exec →
commit the config → post-hooks → release the locks. Locks are released and
the config committed whatever happens.
"""

from __future__ import annotations

from typing import Any

from corral import hooks
from corral.config.writer import ConfigWriter
from corral.jobs.queue import JobContext
from corral.locking import BGL, Level, LockManager
from corral.lu.base import AllNames, LuContext, lu_for
from corral.opcodes import OpCode
from corral.paths import Paths
from corral.rpc.client import NodeTarget, RpcClient


class Processor:
    def __init__(self, cfg: ConfigWriter, rpc: RpcClient, locks: LockManager, paths: Paths) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.locks = locks
        self.paths = paths

    async def __call__(self, op: OpCode, ctx: JobContext) -> Any:
        job = ctx
        lu = lu_for(op)(
            LuContext(cfg=self.cfg, rpc=self.rpc, locks=self.locks, paths=self.paths, job=job), op
        )
        owner = f"job-{job.job_id}"
        try:
            lu.expand_names()
            job.set_waiting()
            for level in Level:
                lu.declare_locks(level)
                if level == Level.CLUSTER:
                    await self.locks.acquire(
                        owner, level, [BGL], shared=not lu.REQ_BGL, priority=op.priority
                    )
                    continue
                if level not in lu.needed_locks:
                    continue
                wanted = lu.needed_locks[level]
                names = None if isinstance(wanted, AllNames) else wanted
                await self.locks.acquire(
                    owner,
                    level,
                    names,
                    shared=lu.share_locks.get(level, False),
                    priority=op.priority,
                )
            job.check_cancel()
            job.set_running()
            lu.check_prereq()
            await lu.check_prereq_nodes()
            if op.dry_run:
                return lu.dry_run_result
            hpath = lu.HPATH
            pre_nodes: list[str] = []
            post_nodes: list[str] = []
            pre_env: dict[str, str] = {}
            if hpath:
                pre_nodes, post_nodes = lu.build_hooks_nodes()
                pre_env = lu.build_hooks_env()
                env = hooks.build_env(
                    self.cfg, self.paths, op.op_id, hpath, lu.HTYPE, "pre", pre_env
                )
                await hooks.run_phase(
                    self.rpc, self._targets(pre_nodes), hpath, "pre", env, lu.log_warning
                )
            result = await lu.exec()
            await self.cfg.commit()
            if hpath:
                post_env = lu.build_hooks_env()
                env = hooks.build_env(
                    self.cfg, self.paths, op.op_id, hpath, lu.HTYPE, "post", pre_env, post_env
                )
                await hooks.run_phase(
                    self.rpc, self._targets(post_nodes), hpath, "post", env, lu.log_warning
                )
            return result
        finally:
            self.locks.release(owner)
            if self.cfg.dirty:
                await self.cfg.commit()

    def _targets(self, node_uuids: list[str]) -> list[NodeTarget]:
        out = []
        for u in dict.fromkeys(node_uuids):
            n = self.cfg.data.nodes.get(u)
            if n is not None:
                out.append(NodeTarget(n.name, n.primary_ip, n.offline))
        return out
