"""Running a query: select objects, fetch live data, build rows.

Layer: master core (queries).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any

from corral import objects
from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.jobs.model import Job
from corral.query.base import (
    RS_NORMAL,
    _nicesort_key,
    _NoData,
)
from corral.query.fields import FIELDS, resolve_fields
from corral.query.filters import compile_filter
from corral.query.instances import InstanceCtx
from corral.query.networks import NetworkCtx
from corral.query.nodes import NodeCtx
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import NodeTarget, RpcClient, RpcResult

# --- running queries ---------------------------------------------------------------------


def _fmt(v: Any) -> list[Any]:
    if isinstance(v, _NoData):
        return [v.status, None]
    return [RS_NORMAL, v]


def _target(n: objects.Node) -> NodeTarget:
    return NodeTarget(n.name, n.primary_ip, n.offline)


class QueryRunner:
    def __init__(
        self, cfg: ConfigWriter, rpc: RpcClient, jobs: Callable[[list[int] | None], list[Job]]
    ) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.jobs = jobs

    async def query(
        self, what: str, field_names: list[str], qfilter: Any = None, names: list[str] | None = None
    ) -> dict[str, Any]:
        fields = resolve_fields(what, field_names)
        pred, used = compile_filter(what, qfilter)
        table = FIELDS[what]
        needed = {f.name: f for f in fields} | {n: table[n] for n in used}
        items, ctx = await self._collect(what, names, any(f.live for f in needed.values()))
        rows = []
        if qfilter is None:  # no filter: each field is computed exactly once anyway
            getters = [f.get for f in fields]
            # The rows are acyclic lists that all stay alive: pause the cyclic GC so
            # building 10k of them does not also trigger full collections of the heap.
            gc_on = gc.isenabled()
            gc.disable()
            try:
                for obj in items:
                    rows.append([_fmt(get(ctx, obj)) for get in getters])
            finally:
                if gc_on:
                    gc.enable()
            return {"fields": [f.definition() for f in fields], "data": rows}
        for obj in items:
            cache: dict[str, Any] = {}

            def row(name: str, obj: Any = obj, cache: dict[str, Any] = cache) -> Any:
                if name not in cache:
                    cache[name] = table[name].get(ctx, obj)
                return cache[name]

            if qfilter is not None and not pred(row):
                continue
            rows.append([_fmt(row(f.name)) for f in fields])
        return {"fields": [f.definition() for f in fields], "data": rows}

    async def _collect(
        self, what: str, names: list[str] | None, live: bool
    ) -> tuple[list[Any], Any]:
        cfg = self.cfg
        if what == "instance":
            insts = self._select(names, cfg.data.instances.values(), "instance")
            live_res: dict[str, RpcResult[t.AllInstancesInfo]] = {}
            if live:
                node_uuids = {i.primary_node for i in insts}
                targets = [_target(cfg.data.nodes[u]) for u in node_uuids if u in cfg.data.nodes]
                live_res = await self.rpc.call_multi(
                    targets,
                    defs.ALL_INSTANCES_INFO,
                    t.HypervisorListArgs(hypervisors=cfg.cluster.enabled_hypervisors),
                )
            return insts, InstanceCtx(cfg, live_res)
        if what == "node":
            nodes = self._select(names, cfg.data.nodes.values(), "node")
            pinst: dict[str, list[str]] = {}
            for i in cfg.data.instances.values():
                pinst.setdefault(i.primary_node, []).append(i.name)
            node_live: dict[str, RpcResult[t.NodeInfo]] = {}
            if live:
                node_live = await self.rpc.call_multi(
                    [_target(n) for n in nodes],
                    defs.NODE_INFO,
                    t.HypervisorListArgs(hypervisors=cfg.cluster.enabled_hypervisors),
                )
            return nodes, NodeCtx(cfg, node_live, pinst)
        if what == "group":
            return self._select(names, cfg.data.nodegroups.values(), "group"), cfg
        if what == "network":
            nets = self._select(names, cfg.data.networks.values(), "network")
            return nets, NetworkCtx.build(cfg)
        if what == "job":
            ids: list[int] | None = None
            if names:
                try:
                    ids = [int(n) for n in names]
                except ValueError:
                    raise ParameterError("names", "job ids must be integers") from None
            jobs = self.jobs(ids)
            if ids is not None:
                found = {j.id for j in jobs}
                missing = [str(i) for i in dict.fromkeys(ids) if i not in found]
                if missing:
                    raise OpPrereqError(f"unknown job(s): {', '.join(missing)}", ECode.NOENT)
            return jobs, None
        raise ParameterError("what", f"unknown resource {what!r}")

    @staticmethod
    def _select(names: list[str] | None, objs: Iterable[Any], kind: str) -> list[Any]:
        all_objs = sorted(objs, key=lambda o: _nicesort_key(o.name))
        if not names:
            return all_objs
        by_name = {o.name: o for o in all_objs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise OpPrereqError(f"unknown {kind}(s): {', '.join(missing)}", ECode.NOENT)
        return [by_name[n] for n in dict.fromkeys(names)]
