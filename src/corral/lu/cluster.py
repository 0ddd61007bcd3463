"""Cluster-wide logical units: info, modify, verify, destroy, tags, delay.

Layer: logical units.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from corral import __version__, hypervisor, objects, params
from corral.errors import CorralError, ECode, OpPrereqError, ParameterError
from corral.locking import Level
from corral.lu import network_checks, ovn
from corral.lu.base import ALL_SET, LogicalUnit, register
from corral.lu.drift import instance_drift
from corral.objects import ConfigObject
from corral.opcodes import (
    OpClusterDestroy,
    OpClusterQuery,
    OpClusterSetParams,
    OpClusterVerify,
    OpTagsDel,
    OpTagsGet,
    OpTagsSet,
    OpTestDelay,
)
from corral.rpc import defs
from corral.rpc import types as t

MAX_TAGS_PER_OBJECT = 4096
NODE_MAX_CLOCK_SKEW = 150.0
CERT_WARN_DAYS = 30


def cluster_info(cfg: Any) -> dict[str, Any]:
    """What ``gnt-cluster info`` shows (also LUXI ``QueryClusterInfo``)."""
    c = cfg.cluster
    return {
        "name": c.cluster_name,
        "uuid": c.uuid,
        "master": cfg.master_node.name,
        "master_ip": c.master_ip,
        "master_netdev": c.master_netdev,
        "software_version": __version__,
        "protocol_version": defs.PROTOCOL_VERSION,
        "config_version": objects.CONFIG_VERSION,
        "serial_no": cfg.data.serial_no,
        "ctime": c.ctime,
        "mtime": c.mtime,
        "tags": c.tags,
        "default_hypervisor": c.enabled_hypervisors[0],
        "enabled_hypervisors": c.enabled_hypervisors,
        "hvparams": {
            hv: hypervisor.params_for(hv).fill_dict(c.hvparams.get(hv))
            for hv in c.enabled_hypervisors
        },
        "beparams": {"default": params.BE.fill_dict(objects.cluster_default(c.beparams))},
        "nicparams": {"default": params.NIC.fill_dict(objects.cluster_default(c.nicparams))},
        "diskparams": {
            tpl: params.disk_group(tpl).fill_dict(c.diskparams.get(tpl))
            for tpl in c.enabled_disk_templates
        },
        "enabled_disk_templates": c.enabled_disk_templates,
        "candidate_pool_size": c.candidate_pool_size,
        "mac_prefix": c.mac_prefix,
        "file_storage_dir": c.file_storage_dir,
        "shared_file_storage_dir": c.shared_file_storage_dir,
        "default_iallocator": c.default_iallocator,
        "max_running_jobs": c.max_running_jobs,
        "hotplug_by_default": c.hotplug_by_default,
        "ovn_nb": c.ovn_nb,
    }


@register(OpClusterQuery)
class LUClusterQuery(LogicalUnit[OpClusterQuery]):
    async def exec(self) -> dict[str, Any]:
        return cluster_info(self.cfg)


@register(OpClusterSetParams)
class LUClusterSetParams(LogicalUnit[OpClusterSetParams]):
    HPATH = "cluster-modify"
    HTYPE = "CLUSTER"
    REQ_BGL = True

    def check_prereq(self) -> None:
        op, c = self.op, self.cfg.cluster
        self.new = self.cfg.copy(c)
        new = self.new
        if op.enabled_hypervisors is not None:
            if not op.enabled_hypervisors:
                raise ParameterError("enabled_hypervisors", "at least one hypervisor needed")
            for hv in op.enabled_hypervisors:
                hypervisor.hv_class(hv, "enabled_hypervisors")
            used = {i.hypervisor for i in self.cfg.data.instances.values()}
            dropped = used - set(op.enabled_hypervisors)
            if dropped:
                raise OpPrereqError(
                    f"hypervisor(s) {', '.join(sorted(dropped))} still used by instances",
                    ECode.STATE,
                )
            new.enabled_hypervisors = list(op.enabled_hypervisors)
        if op.enabled_disk_templates is not None:
            for tpl in op.enabled_disk_templates:
                params.disk_group(tpl, "enabled_disk_templates")
            used = {i.disk_template for i in self.cfg.data.instances.values()}
            dropped = used - set(op.enabled_disk_templates)
            if dropped:
                raise OpPrereqError(
                    f"disk template(s) {', '.join(sorted(dropped))} still used by instances",
                    ECode.STATE,
                )
            new.enabled_disk_templates = list(op.enabled_disk_templates)
        if op.hvparams:
            for hv, values in op.hvparams.items():
                g = hypervisor.params_for(hv)
                changes = g.check_overrides(values, f"hvparams/{hv}")
                new.hvparams[hv] = params.apply_overrides(new.hvparams.get(hv, {}), changes)
                # Cross-field checks too (initrd_path needs kernel_path, …), as at
                # instance creation: otherwise every later start would fail.
                hypervisor.hv_class(hv).check_syntax(g.fill_dict(new.hvparams[hv]))
        if op.beparams:
            changes = params.BE.check_overrides(op.beparams, "beparams")
            new.beparams["default"] = params.apply_overrides(
                objects.cluster_default(new.beparams), changes
            )
            be = params.BE.fill(new.beparams["default"])
            if be.minmem > be.maxmem:
                raise ParameterError("beparams/minmem", "minmem is larger than maxmem")
        if op.nicparams:
            changes = params.NIC.check_overrides(op.nicparams, "nicparams")
            new.nicparams["default"] = params.apply_overrides(
                objects.cluster_default(new.nicparams), changes
            )
        if op.diskparams:
            for tpl, values in op.diskparams.items():
                g = params.disk_group(tpl, "diskparams")
                changes = g.check_overrides(values, f"diskparams/{tpl}")
                new.diskparams[tpl] = params.apply_overrides(new.diskparams.get(tpl, {}), changes)
        if op.mac_prefix is not None and int(op.mac_prefix[:2], 16) & 1:
            raise ParameterError(
                "mac_prefix",
                f"{op.mac_prefix} is a multicast prefix; MACs made from it are invalid",
            )
        for name in ("candidate_pool_size", "mac_prefix", "max_running_jobs", "hotplug_by_default"):
            value = getattr(op, name)
            if value is not None:
                setattr(new, name, value)
        if op.ovn_nb is not None:
            new.ovn_nb = network_checks.ovn_nb_remote(op.ovn_nb)

    def build_hooks_env(self) -> dict[str, str]:
        return {"OP_TARGET": self.cfg.cluster.cluster_name}

    async def exec(self) -> None:
        self.cfg.update(self.new)


@register(OpClusterDestroy)
class LUClusterDestroy(LogicalUnit[OpClusterDestroy]):
    HPATH = "cluster-destroy"
    HTYPE = "CLUSTER"
    REQ_BGL = True

    def check_prereq(self) -> None:
        n_inst = len(self.cfg.data.instances)
        if n_inst:
            raise OpPrereqError(
                f"there are still {n_inst} instance(s) in this cluster", ECode.STATE
            )
        others = [n for n in self.cfg.data.nodes.values() if n.uuid != self.cfg.cluster.master_node]
        if others:
            raise OpPrereqError(
                f"there are still {len(others)} node(s) besides the master", ECode.STATE
            )

    def build_hooks_env(self) -> dict[str, str]:
        return {"OP_TARGET": self.cfg.cluster.cluster_name}

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        return [], []

    async def exec(self) -> str:
        return self.cfg.master_node.name


@register(OpClusterVerify)
class LUClusterVerify(LogicalUnit[OpClusterVerify]):
    HPATH = "cluster-verify"
    HTYPE = "CLUSTER"

    def expand_names(self) -> None:
        self.needed_locks[Level.INSTANCE] = ALL_SET
        self.needed_locks[Level.NODE] = ALL_SET
        self.share_locks = {lv: True for lv in Level}

    def build_hooks_env(self) -> dict[str, str]:
        return {"CLUSTER_TAGS": " ".join(self.cfg.cluster.tags)}

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        return [], [n.uuid for n in self.cfg.data.nodes.values() if not n.offline]

    def _error(self, kind: str, item: str, msg: str) -> None:
        self.bad = True
        self.log_info(f"  - ERROR: {kind} {item}: {msg}")

    def _warn(self, kind: str, item: str, msg: str) -> None:
        self.log_info(f"  - WARNING: {kind} {item}: {msg}")

    async def exec(self) -> bool:
        self.bad = False
        cfg, data = self.cfg, self.cfg.data
        self.log_info("* Verifying cluster config")
        if data.cluster.master_node not in data.nodes:
            self._error("cluster", data.cluster.cluster_name, "master node not in config")
        macs = Counter(nic.mac for i in data.instances.values() for nic in i.nics)
        for mac, n in macs.items():
            if n > 1:
                self._error("cluster", data.cluster.cluster_name, f"MAC {mac} used by {n} NICs")
        used_disks: set[str] = set()
        for inst in data.instances.values():
            if inst.primary_node not in data.nodes:
                self._error("instance", inst.name, "primary node not in config")
            for d in inst.disks:
                if d not in data.disks:
                    self._error("instance", inst.name, f"disk {d} missing from config")
                used_disks.add(d)
        for d in set(data.disks) - used_disks:
            self._warn("cluster", data.cluster.cluster_name, f"disk {d} belongs to no instance")

        self.log_info("* Verifying node status")
        online = [n for n in data.nodes.values() if not n.offline]
        targets = [self.target(n) for n in online]
        versions = await self.rpc.call_multi(targets, defs.VERSION, t.Empty())
        infos = await self.rpc.call_multi(
            targets,
            defs.NODE_INFO,
            t.HypervisorListArgs(hypervisors=data.cluster.enabled_hypervisors),
        )
        runtime = await self.rpc.call_multi(
            targets,
            defs.ALL_INSTANCES_INFO,
            t.HypervisorListArgs(hypervisors=data.cluster.enabled_hypervisors),
        )
        now = time.time()
        for node in online:
            v = versions[node.name]
            if v.failed:
                self._error("node", node.name, f"unreachable: {v.fail_msg}")
                continue
            assert v.payload is not None
            if v.payload.protocol != defs.PROTOCOL_VERSION:
                self._error(
                    "node",
                    node.name,
                    f"protocol version {v.payload.protocol}, master has {defs.PROTOCOL_VERSION}",
                )
            if v.payload.software != __version__:
                self._warn(
                    "node",
                    node.name,
                    f"software version {v.payload.software}, master has {__version__}",
                )
            info = infos[node.name]
            if info.payload is not None and abs(info.payload.time - now) > NODE_MAX_CLOCK_SKEW:
                self._error(
                    "node",
                    node.name,
                    f"clock skew of {info.payload.time - now:.0f}s with the master",
                )

        self.log_info("* Verifying master candidates and certificates")
        masters = await self.rpc.call_multi(targets, defs.MASTER_INFO, t.Empty())
        serial = data.serial_no
        for node in online:
            mi = masters[node.name].payload
            if mi is None:
                continue
            if node.master_candidate and node.uuid != data.cluster.master_node:
                if mi.config_serial is None:
                    self._error("node", node.name, "master candidate holds no config copy")
                elif mi.config_serial < serial:
                    self._warn(
                        "node",
                        node.name,
                        f"config copy at serial "
                        f"{mi.config_serial}, master at {serial} (replication "
                        "pending)",
                    )
            if mi.master_node is not None and mi.master_node != cfg.master_node.name:
                self._error("node", node.name, f"believes {mi.master_node} is the master")
            if mi.cert_not_after is None:
                self._error("node", node.name, "has no readable node certificate")
            else:
                days = (mi.cert_not_after - now) / 86400
                if days < 0:
                    self._error("node", node.name, "node certificate has expired")
                elif days < CERT_WARN_DAYS:
                    self._warn("node", node.name, f"node certificate expires in {days:.0f} days")

        self.log_info("* Verifying instance status")
        running_on: dict[str, str] = {}
        live: dict[str, t.InstanceRuntime] = {}
        for node in online:
            r = runtime[node.name]
            if r.payload is not None:
                for name, rt in r.payload.instances.items():
                    running_on[name] = node.uuid
                    live[name] = rt
        for inst in data.instances.values():
            pnode = data.nodes.get(inst.primary_node)
            if pnode is None or pnode.offline or runtime[pnode.name].failed:
                continue
            where = running_on.get(inst.name)
            if inst.admin_state == "up" and where is None:
                self._error(
                    "instance", inst.name, f"instance not running on its primary node {pnode.name}"
                )
            elif inst.admin_state != "up" and where == pnode.uuid:
                self._error("instance", inst.name, "instance should not run, but is running")
            elif where is not None and where != pnode.uuid:
                self._error(
                    "instance",
                    inst.name,
                    f"instance running on wrong node {data.nodes[where].name}",
                )
            if where == pnode.uuid:
                for drift in instance_drift(cfg, inst, live[inst.name]):
                    report = self._warn if drift.pending else self._error
                    report("instance", inst.name, drift.message)
        for name, node_uuid in running_on.items():
            if cfg.instance_by_name(name) is None:
                self._warn(
                    "node", data.nodes[node_uuid].name, f"unknown instance {name} is running"
                )
        if data.cluster.ovn_nb:
            self.log_info("* Verifying OVN ports")
            on_node = {name: data.nodes[u].name for name, u in running_on.items()}
            try:
                for p in await ovn.port_problems(cfg, on_node):
                    report = self._error if p.error else self._warn
                    kind, item = ("instance", p.instance) if p.instance else ("cluster", "ovn")
                    report(kind, item, p.message)
            except CorralError as err:
                self._error("cluster", "ovn", f"OVN northbound database: {err.message}")
        return not self.bad


# --- tags ------------------------------------------------------------------------------


class _TagsLU(LogicalUnit[Any]):
    def expand_names(self) -> None:
        kind, name = self.op.kind, self.op.name
        if kind != "cluster" and not name:
            raise ParameterError("name", f"tags of a {kind} need its name")
        self.target_obj: ConfigObject
        if kind == "cluster":
            self.target_obj = self.cfg.cluster
        elif kind == "instance":
            inst = self.cfg.expand_instance(name)
            self.target_obj = inst
            self.needed_locks[Level.INSTANCE] = [inst.name]
        elif kind == "node":
            node = self.cfg.expand_node(name)
            self.target_obj = node
            self.needed_locks[Level.NODE] = [node.uuid]
        elif kind == "nodegroup":
            grp = self.cfg.expand_group(name)
            self.target_obj = grp
            self.needed_locks[Level.NODEGROUP] = [grp.uuid]
        else:
            net = self.cfg.network_by_name(name)
            if net is None:
                raise OpPrereqError(f"network '{name}' not known", ECode.NOENT)
            self.target_obj = net
            self.needed_locks[Level.NETWORK] = [net.uuid]

    def current(self) -> ConfigObject:
        o = self.target_obj
        if self.op.kind == "cluster":
            return self.cfg.cluster
        tables: dict[str, Any] = {
            "instance": self.cfg.data.instances,
            "node": self.cfg.data.nodes,
            "nodegroup": self.cfg.data.nodegroups,
            "network": self.cfg.data.networks,
        }
        table: dict[str, Any] = tables[self.op.kind]
        cur = table.get(o.uuid)
        if cur is None:
            raise OpPrereqError(f"{self.op.kind} '{self.op.name}' was removed", ECode.NOENT)
        return cur  # type: ignore[no-any-return]


@register(OpTagsGet)
class LUTagsGet(_TagsLU):
    async def exec(self) -> list[str]:
        return sorted(self.current().tags)


@register(OpTagsSet)
class LUTagsSet(_TagsLU):
    def check_prereq(self) -> None:
        cur = self.current()
        new = set(cur.tags) | set(self.op.tags)
        if len(new) > MAX_TAGS_PER_OBJECT:
            raise OpPrereqError(f"too many tags (max {MAX_TAGS_PER_OBJECT})", ECode.NORES)

    async def exec(self) -> None:
        obj = self.cfg.copy(self.current())
        obj.tags = sorted(set(obj.tags) | set(self.op.tags))
        self.cfg.update(obj)


@register(OpTagsDel)
class LUTagsDel(_TagsLU):
    def check_prereq(self) -> None:
        missing = set(self.op.tags) - set(self.current().tags)
        if missing:
            raise OpPrereqError(f"tag(s) {', '.join(sorted(missing))} not found", ECode.NOENT)

    async def exec(self) -> None:
        obj = self.cfg.copy(self.current())
        obj.tags = sorted(set(obj.tags) - set(self.op.tags))
        self.cfg.update(obj)


# --- debug ---------------------------------------------------------------------------


@register(OpTestDelay)
class LUTestDelay(LogicalUnit[OpTestDelay]):
    def expand_names(self) -> None:
        self.nodes = [self.cfg.expand_node(n) for n in self.op.on_nodes]
        if not self.op.no_locks:
            self.needed_locks[Level.NODE] = [n.uuid for n in self.nodes]

    async def _sleep(self) -> None:
        end = time.monotonic() + self.op.duration
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))
            self.ctx.job.check_cancel()

    async def _once(self) -> None:
        if self.op.on_master:
            await self._sleep()
        if self.nodes:
            res = await self.rpc.call_multi(
                [self.target(n) for n in self.nodes],
                defs.TEST_DELAY,
                t.DelayArgs(duration=self.op.duration),
            )
            for r in res.values():
                r.get("test delay")

    async def exec(self) -> None:
        if self.op.repeat == 0:
            await self._once()
            return
        for i in range(self.op.repeat):
            self.log_info(f"Test delay iteration {i}/{self.op.repeat - 1}")
            await self._once()
