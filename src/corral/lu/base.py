"""Logical units: the code behind each opcode.

Layer: logical units (imports config, locking, rpc client, hooks). An LU
declares the locks it needs, checks prerequisites, builds its hooks
environment and executes — reaching nodes only through RPC. LUs are
registered explicitly for their opcode with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError, ProgrammerError
from corral.jobs.queue import JobContext
from corral.locking import Level, LockManager
from corral.objects import Node
from corral.opcodes import OpCode
from corral.paths import Paths
from corral.rpc import defs
from corral.rpc.client import NodeTarget, RpcClient
from corral.rpc.types import BridgesArgs

OpT = TypeVar("OpT", bound=OpCode)


class AllNames:
    """Marker: every name at a lock level."""

    def __repr__(self) -> str:
        return "ALL_SET"


ALL_SET = AllNames()
LockNames = list[str] | AllNames


@dataclass
class LuContext:
    """What every LU gets: config, RPC, locks, the job, the master's paths."""

    cfg: ConfigWriter
    rpc: RpcClient
    locks: LockManager
    paths: Paths
    job: JobContext


class LogicalUnit(Generic[OpT]):
    HPATH: ClassVar[str | None] = None
    HTYPE: ClassVar[str | None] = None  # GANETI_OBJECT_TYPE: CLUSTER, NODE, INSTANCE, ...
    REQ_BGL: ClassVar[bool] = False  # True: needs the cluster lock exclusively

    def __init__(self, ctx: LuContext, op: OpT) -> None:
        self.ctx = ctx
        self.op = op
        self.cfg = ctx.cfg
        self.rpc = ctx.rpc
        self.needed_locks: dict[Level, LockNames] = {}
        self.share_locks: dict[Level, bool] = {}
        self.dry_run_result: Any = None

    # --- the steps, in the order the processor calls them ---------------------------

    def expand_names(self) -> None:
        """Resolve names and fill :attr:`needed_locks` (no config changes)."""

    def declare_locks(self, level: Level) -> None:
        """Refine the locks of ``level`` from the locks already held."""

    def check_prereq(self) -> None:
        """Check everything is as required, under the locks; raise OpPrereqError."""

    async def check_prereq_nodes(self) -> None:
        """Prerequisite checks that must ask nodes (RPC); run after :meth:`check_prereq`.

        Same locks, also in a dry run, before any hook; raise OpPrereqError.
        """

    def build_hooks_env(self) -> dict[str, str]:
        return {}

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        """Node UUIDs to run (pre, post) hooks on; default: the master."""
        m = self.cfg.cluster.master_node
        return [m], [m]

    async def exec(self) -> Any:
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------

    def log_info(self, message: str) -> None:
        self.ctx.job.feedback(message)

    def log_warning(self, message: str, hint: str | None = None) -> None:
        self.ctx.job.feedback(f"WARNING: {message}")
        if hint:
            self.ctx.job.feedback(f"Hint: {hint}")

    def target(self, node: Node | str) -> NodeTarget:
        if isinstance(node, str):
            node = self.cfg.data.nodes[node]
        return NodeTarget(node.name, node.primary_ip, node.offline)

    async def check_bridges(self, node: Node, bridges: list[str]) -> None:
        """OpPrereqError unless every bridge exists on ``node`` (asked only if any)."""
        if not bridges:
            return
        res = await self.rpc.call(
            self.target(node), defs.BRIDGES_EXIST, BridgesArgs(bridges=bridges)
        )
        missing = res.get(f"checking bridges on {node.name}").missing
        if missing:
            raise OpPrereqError(
                f"bridge(s) {', '.join(missing)} do not exist on node {node.name}", ECode.ENVIRON
            )

    def owned(self, level: Level) -> list[str]:
        owner = f"job-{self.ctx.job.job_id}"
        return [
            n for n in self.ctx.locks.owned.get(owner, {}).get(level, {}) if not n.startswith("[")
        ]


class NoHooksLU(LogicalUnit[OpT]):
    pass


LU_REGISTRY: dict[type[OpCode], type[LogicalUnit[Any]]] = {}

L = TypeVar("L", bound=type[LogicalUnit[Any]])


def register(op_class: type[OpCode]) -> Callable[[L], L]:
    def deco(lu_class: L) -> L:
        if op_class in LU_REGISTRY:
            raise ProgrammerError(f"two LUs for {op_class.__name__}")
        LU_REGISTRY[op_class] = lu_class
        return lu_class

    return deco


def lu_for(op: OpCode) -> type[LogicalUnit[Any]]:
    try:
        return LU_REGISTRY[type(op)]
    except KeyError:
        raise OpPrereqError(f"opcode {op.op_id} is not implemented", ECode.INVAL) from None
