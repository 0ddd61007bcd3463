"""Queries: the fields of ``list`` commands, filters, and live data.

Layer: master core (imports config, rpc client, job queue). Ganeti's query2
shapes: a field has a name, a title, a kind and a doc; a result is
``{"fields": [...], "data": [[[status, value], ...], ...]}`` with Ganeti's
result statuses; filters are Ganeti's list form (``["&", ["=", "name",
"x"], ...]``). Queries read the in-memory config without taking locks and
fetch live data from nodes only when a requested field needs it.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from corral import hypervisor, objects, opcodes, params
from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.jobs.model import Job
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import NodeTarget, RpcClient, RpcResult

RS_NORMAL, RS_UNKNOWN, RS_NODATA, RS_UNAVAIL, RS_OFFLINE = 0, 1, 2, 3, 4

QFT_TEXT, QFT_BOOL, QFT_NUMBER, QFT_UNIT, QFT_TIMESTAMP, QFT_OTHER = (
    "text",
    "bool",
    "number",
    "unit",
    "timestamp",
    "other",
)


class _NoData:
    def __init__(self, status: int) -> None:
        self.status = status


NODATA = _NoData(RS_NODATA)
UNAVAIL = _NoData(RS_UNAVAIL)
OFFLINE = _NoData(RS_OFFLINE)


@dataclass(frozen=True)
class Field:
    name: str
    title: str
    kind: str
    doc: str
    get: Callable[[Any, Any], Any]  # (context, object) -> value or _NoData
    live: bool = False

    def definition(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "kind": self.kind, "doc": self.doc}


_DIGITS_RE = re.compile(r"(\d+)")


def _nicesort_key(name: str) -> list[Any]:
    """Sort key: digit runs compare as numbers (``node2`` < ``node10``).

    Splitting on a captured ``\\d+`` puts text at even and numbers at odd
    positions, so two keys only ever compare text with text and numbers
    with numbers.
    """
    parts: list[Any] = _DIGITS_RE.split(name)
    parts[1::2] = map(int, parts[1::2])
    return parts


# --- instances ------------------------------------------------------------------------


@dataclass
class InstanceCtx:
    cfg: ConfigWriter
    live: dict[str, RpcResult[t.AllInstancesInfo]]  # by node name


def _inst_live(ctx: InstanceCtx, inst: objects.Instance) -> Any:
    node = ctx.cfg.data.nodes.get(inst.primary_node)
    if node is None:
        return UNAVAIL
    if node.offline:
        return OFFLINE
    res = ctx.live.get(node.name)
    if res is None or res.failed or res.payload is None:
        return NODATA
    return res.payload.instances.get(inst.name)


def _inst_status(ctx: InstanceCtx, inst: objects.Instance) -> str:
    node = ctx.cfg.data.nodes.get(inst.primary_node)
    if node is not None and node.offline:
        return "ERROR_nodeoffline"
    live = _inst_live(ctx, inst)
    if isinstance(live, _NoData):
        return "ERROR_nodedown"
    if live is not None:
        return "running" if inst.admin_state == "up" else "ERROR_up"
    if inst.admin_state == "up":
        return "ERROR_down"
    return "ADMIN_offline" if inst.admin_state == "offline" else "ADMIN_down"


def _live_attr(attr: str) -> Callable[[InstanceCtx, objects.Instance], Any]:
    def get(ctx: InstanceCtx, inst: objects.Instance) -> Any:
        live = _inst_live(ctx, inst)
        if isinstance(live, _NoData):
            return live
        return getattr(live, attr) if live is not None else None

    return get


def _filled_be(ctx: InstanceCtx, inst: objects.Instance) -> params.BeParams:
    node = ctx.cfg.data.nodes.get(inst.primary_node)
    group = ctx.cfg.data.nodegroups.get(node.group) if node else None
    return objects.fill_be(ctx.cfg.cluster, group, inst)


def _filled_hv(ctx: InstanceCtx, inst: objects.Instance) -> dict[str, Any]:
    node = ctx.cfg.data.nodes.get(inst.primary_node)
    group = ctx.cfg.data.nodegroups.get(node.group) if node else None
    return hypervisor.fill_hv(ctx.cfg.cluster, group, inst)


def _disks(ctx: InstanceCtx, inst: objects.Instance) -> list[objects.Disk]:
    return [ctx.cfg.data.disks[u] for u in inst.disks if u in ctx.cfg.data.disks]


def _node_name(cfg: ConfigWriter, uuid: str) -> Any:
    n = cfg.data.nodes.get(uuid)
    return n.name if n else UNAVAIL


def _nic_attr(idx: int, attr: str) -> Callable[[InstanceCtx, objects.Instance], Any]:
    def get(c: InstanceCtx, i: objects.Instance) -> Any:
        return getattr(i.nics[idx], attr) if idx < len(i.nics) else UNAVAIL

    return get


def _disk_size(idx: int) -> Callable[[InstanceCtx, objects.Instance], Any]:
    def get(c: InstanceCtx, i: objects.Instance) -> Any:
        return _disks(c, i)[idx].size if idx < len(i.disks) else UNAVAIL

    return get


def _hv_param(name: str) -> Callable[[InstanceCtx, objects.Instance], Any]:
    def get(c: InstanceCtx, i: objects.Instance) -> Any:
        return _filled_hv(c, i).get(name, UNAVAIL)

    return get


def _instance_fields() -> dict[str, Field]:
    f: list[Field] = [
        Field("name", "Instance", QFT_TEXT, "Instance name", lambda c, i: i.name),
        Field("uuid", "UUID", QFT_TEXT, "Instance UUID", lambda c, i: i.uuid),
        Field("os", "OS", QFT_TEXT, "Operating system", lambda c, i: i.os),
        Field(
            "pnode",
            "Primary_node",
            QFT_TEXT,
            "Primary node",
            lambda c, i: _node_name(c.cfg, i.primary_node),
        ),
        Field(
            "pnode.group",
            "PrimaryNodeGroup",
            QFT_TEXT,
            "Primary node's group",
            lambda c, i: c.cfg.data.nodegroups[c.cfg.data.nodes[i.primary_node].group].name,
        ),
        Field("snodes", "Secondary_Nodes", QFT_OTHER, "Secondary nodes", lambda c, i: []),
        Field(
            "admin_state",
            "InstanceState",
            QFT_TEXT,
            "Desired state (up/down/offline)",
            lambda c, i: i.admin_state,
        ),
        Field(
            "admin_up",
            "Autostart",
            QFT_BOOL,
            "Whether the instance should run",
            lambda c, i: i.admin_state == "up",
        ),
        Field(
            "status",
            "Status",
            QFT_TEXT,
            "Combined desired and actual state",
            _inst_status,
            live=True,
        ),
        Field(
            "oper_state",
            "Running",
            QFT_BOOL,
            "Whether the instance runs",
            lambda c, i: (lambda v: v if isinstance(v, _NoData) else v is not None)(
                _inst_live(c, i)
            ),
            live=True,
        ),
        Field(
            "oper_ram", "Memory", QFT_UNIT, "Actual memory (MiB)", _live_attr("memory"), live=True
        ),
        Field("oper_vcpus", "VCPUs", QFT_NUMBER, "Actual VCPUs", _live_attr("vcpus"), live=True),
        Field(
            "disk_template",
            "Disk_template",
            QFT_TEXT,
            "Disk template",
            lambda c, i: i.disk_template,
        ),
        Field("hypervisor", "Hypervisor", QFT_TEXT, "Hypervisor", lambda c, i: i.hypervisor),
        Field("tags", "Tags", QFT_OTHER, "Tags", lambda c, i: list(i.tags)),
        Field("ctime", "CTime", QFT_TIMESTAMP, "Creation time", lambda c, i: i.ctime),
        Field("mtime", "MTime", QFT_TIMESTAMP, "Modification time", lambda c, i: i.mtime),
        Field("serial_no", "SerialNo", QFT_NUMBER, "Serial number", lambda c, i: i.serial_no),
        Field(
            "network_port", "Network_port", QFT_OTHER, "Console port", lambda c, i: i.network_port
        ),
        Field("nic.count", "NICs", QFT_NUMBER, "Number of NICs", lambda c, i: len(i.nics)),
        Field("nic.macs", "NIC_MACs", QFT_OTHER, "NIC MACs", lambda c, i: [n.mac for n in i.nics]),
        Field("nic.ips", "NIC_IPs", QFT_OTHER, "NIC IPs", lambda c, i: [n.ip for n in i.nics]),
        Field(
            "nic.names", "NIC_Names", QFT_OTHER, "NIC names", lambda c, i: [n.name for n in i.nics]
        ),
        Field(
            "nic.uuids", "NIC_UUIDs", QFT_OTHER, "NIC UUIDs", lambda c, i: [n.uuid for n in i.nics]
        ),
        Field(
            "nic.modes",
            "NIC_modes",
            QFT_OTHER,
            "NIC modes",
            lambda c, i: [_nic_param(c, i, n, "mode") for n in i.nics],
        ),
        Field(
            "nic.links",
            "NIC_links",
            QFT_OTHER,
            "NIC links",
            lambda c, i: [_nic_param(c, i, n, "link") for n in i.nics],
        ),
        Field(
            "nic.vlans",
            "NIC_VLANs",
            QFT_OTHER,
            "NIC VLANs",
            lambda c, i: [_nic_param(c, i, n, "vlan") for n in i.nics],
        ),
        Field("disk.count", "Disks", QFT_NUMBER, "Number of disks", lambda c, i: len(i.disks)),
        Field(
            "disk.sizes",
            "Disk_sizes",
            QFT_OTHER,
            "Disk sizes (MiB)",
            lambda c, i: [d.size for d in _disks(c, i)],
        ),
        Field("disk.uuids", "Disk_UUIDs", QFT_OTHER, "Disk UUIDs", lambda c, i: list(i.disks)),
        Field(
            "disk_usage",
            "DiskUsage",
            QFT_UNIT,
            "Total disk space used (MiB)",
            lambda c, i: sum(d.size for d in _disks(c, i)),
        ),
    ]
    for idx in range(8):
        f.append(
            Field(
                f"nic.mac/{idx}",
                f"NicMAC/{idx}",
                QFT_TEXT,
                f"MAC of NIC {idx}",
                _nic_attr(idx, "mac"),
            )
        )
        f.append(
            Field(
                f"nic.ip/{idx}",
                f"NicIP/{idx}",
                QFT_TEXT,
                f"IP of NIC {idx}",
                _nic_attr(idx, "ip"),
            )
        )
    for idx in range(16):
        f.append(
            Field(
                f"disk.size/{idx}",
                f"Disk/{idx}",
                QFT_UNIT,
                f"Size of disk {idx}",
                _disk_size(idx),
            )
        )
    for name, p in params.BE.params.items():
        kind = (
            QFT_UNIT if p.unit == "MiB" else (QFT_BOOL if p.type_name == "boolean" else QFT_NUMBER)
        )

        def getter(c: InstanceCtx, i: objects.Instance, name: str = name) -> Any:
            return getattr(_filled_be(c, i), name)

        f.append(Field(f"be/{name}", f"BE_{name}", kind, p.doc, getter))
        f.append(Field(name, name.capitalize(), kind, p.doc, getter))
    f.append(
        Field(
            "be/memory",
            "ConfigMemory",
            QFT_UNIT,
            "Configured maximum memory",
            lambda c, i: _filled_be(c, i).maxmem,
        )
    )
    hv_names = {n for cls in hypervisor.HYPERVISORS.values() for n in cls.PARAMS.names()}
    for name in sorted(hv_names):
        f.append(
            Field(
                f"hv/{name}",
                f"HV_{name}",
                QFT_OTHER,
                f"Hypervisor parameter {name}",
                _hv_param(name),
            )
        )
    return {x.name: x for x in f}


def _nic_param(c: InstanceCtx, inst: objects.Instance, nic: objects.NIC, what: str) -> Any:
    node = c.cfg.data.nodes.get(inst.primary_node)
    group = c.cfg.data.nodegroups.get(node.group) if node else None
    return getattr(objects.fill_nic(c.cfg.cluster, group, nic), what)


# --- nodes ------------------------------------------------------------------------------


@dataclass
class NodeCtx:
    cfg: ConfigWriter
    live: dict[str, RpcResult[t.NodeInfo]]
    pinst: dict[str, list[str]]


def _node_role(cfg: ConfigWriter, n: objects.Node) -> str:
    if n.uuid == cfg.cluster.master_node:
        return "M"
    if n.offline:
        return "O"
    if n.drained:
        return "D"
    return "C" if n.master_candidate else "R"


def _node_live(attr: str) -> Callable[[NodeCtx, objects.Node], Any]:
    def get(ctx: NodeCtx, n: objects.Node) -> Any:
        if n.offline:
            return OFFLINE
        r = ctx.live.get(n.name)
        if r is None or r.failed or r.payload is None:
            return NODATA
        return getattr(r.payload, attr)

    return get


def _node_fields() -> dict[str, Field]:
    f = [
        Field("name", "Node", QFT_TEXT, "Node name", lambda c, n: n.name),
        Field("uuid", "UUID", QFT_TEXT, "Node UUID", lambda c, n: n.uuid),
        Field("pip", "PrimaryIP", QFT_TEXT, "Primary IP", lambda c, n: n.primary_ip),
        Field("sip", "SecondaryIP", QFT_TEXT, "Secondary IP", lambda c, n: n.secondary_ip),
        Field(
            "group",
            "Group",
            QFT_TEXT,
            "Node group",
            lambda c, n: c.cfg.data.nodegroups[n.group].name,
        ),
        Field("group.uuid", "GroupUUID", QFT_TEXT, "Node group UUID", lambda c, n: n.group),
        Field(
            "master",
            "IsMaster",
            QFT_BOOL,
            "Whether the node is the master",
            lambda c, n: n.uuid == c.cfg.cluster.master_node,
        ),
        Field(
            "master_candidate",
            "MasterC",
            QFT_BOOL,
            "Master candidate",
            lambda c, n: n.master_candidate,
        ),
        Field(
            "master_capable",
            "MasterCapable",
            QFT_BOOL,
            "Can become master candidate",
            lambda c, n: n.master_capable,
        ),
        Field("vm_capable", "VMCapable", QFT_BOOL, "Can host instances", lambda c, n: n.vm_capable),
        Field("offline", "Offline", QFT_BOOL, "Offline", lambda c, n: n.offline),
        Field("drained", "Drained", QFT_BOOL, "Drained", lambda c, n: n.drained),
        Field(
            "role",
            "Role",
            QFT_TEXT,
            "M(aster), C(andidate), R(egular), D(rained), O(ffline)",
            lambda c, n: _node_role(c.cfg, n),
        ),
        Field("tags", "Tags", QFT_OTHER, "Tags", lambda c, n: list(n.tags)),
        Field("ctime", "CTime", QFT_TIMESTAMP, "Creation time", lambda c, n: n.ctime),
        Field("mtime", "MTime", QFT_TIMESTAMP, "Modification time", lambda c, n: n.mtime),
        Field("serial_no", "SerialNo", QFT_NUMBER, "Serial number", lambda c, n: n.serial_no),
        Field(
            "pinst_cnt",
            "Pinst",
            QFT_NUMBER,
            "Primary instances",
            lambda c, n: len(c.pinst.get(n.uuid, [])),
        ),
        Field("sinst_cnt", "Sinst", QFT_NUMBER, "Secondary instances", lambda c, n: 0),
        Field(
            "pinst_list",
            "PriInstances",
            QFT_OTHER,
            "Primary instances",
            lambda c, n: sorted(c.pinst.get(n.uuid, []), key=_nicesort_key),
        ),
        Field("sinst_list", "SecInstances", QFT_OTHER, "Secondary instances", lambda c, n: []),
        Field(
            "mtotal",
            "MTotal",
            QFT_UNIT,
            "Total memory (MiB)",
            _node_live("memory_total"),
            live=True,
        ),
        Field(
            "mnode",
            "MNode",
            QFT_UNIT,
            "Memory used by the node itself (MiB)",
            _node_live("memory_dom0"),
            live=True,
        ),
        Field(
            "mfree",
            "MFree",
            QFT_UNIT,
            "Memory free for instances (MiB)",
            _node_live("memory_free"),
            live=True,
        ),
        Field(
            "dtotal",
            "DTotal",
            QFT_UNIT,
            "Total disk space for instances (MiB)",
            _node_live("disk_total"),
            live=True,
        ),
        Field(
            "dfree", "DFree", QFT_UNIT, "Free disk space (MiB)", _node_live("disk_free"), live=True
        ),
        Field("ctotal", "CTotal", QFT_NUMBER, "Number of CPUs", _node_live("cpu_total"), live=True),
        Field("bootid", "BootID", QFT_TEXT, "Boot ID", _node_live("bootid"), live=True),
    ]
    return {x.name: x for x in f}


# --- groups and jobs ----------------------------------------------------------------------


def _group_fields() -> dict[str, Field]:
    def nodes_of(c: ConfigWriter, g: objects.NodeGroup) -> list[str]:
        return sorted(
            (n.name for n in c.data.nodes.values() if n.group == g.uuid), key=_nicesort_key
        )

    f = [
        Field("name", "Group", QFT_TEXT, "Group name", lambda c, g: g.name),
        Field("uuid", "UUID", QFT_TEXT, "Group UUID", lambda c, g: g.uuid),
        Field(
            "alloc_policy",
            "AllocPolicy",
            QFT_TEXT,
            "Allocation policy",
            lambda c, g: g.alloc_policy,
        ),
        Field("node_cnt", "Nodes", QFT_NUMBER, "Number of nodes", lambda c, g: len(nodes_of(c, g))),
        Field("node_list", "NodeList", QFT_OTHER, "Nodes", nodes_of),
        Field("tags", "Tags", QFT_OTHER, "Tags", lambda c, g: list(g.tags)),
        Field("serial_no", "SerialNo", QFT_NUMBER, "Serial number", lambda c, g: g.serial_no),
        Field("ctime", "CTime", QFT_TIMESTAMP, "Creation time", lambda c, g: g.ctime),
        Field("mtime", "MTime", QFT_TIMESTAMP, "Modification time", lambda c, g: g.mtime),
    ]
    return {x.name: x for x in f}


def _job_fields() -> dict[str, Field]:
    f = [
        Field("id", "ID", QFT_NUMBER, "Job ID", lambda c, j: j.id),
        Field("status", "Status", QFT_TEXT, "Job status", lambda c, j: j.status.value),
        Field("priority", "Prio", QFT_NUMBER, "Current priority", lambda c, j: j.priority),
        Field("summary", "Summary", QFT_OTHER, "Opcode summaries", lambda c, j: j.summary),
        Field(
            "ops",
            "OpCodes",
            QFT_OTHER,
            "Opcodes",
            lambda c, j: [opcodes.to_obj(o.input) for o in j.ops],
        ),
        Field(
            "opstatus",
            "OpCode_status",
            QFT_OTHER,
            "Opcode statuses",
            lambda c, j: [o.status.value for o in j.ops],
        ),
        Field(
            "opresult",
            "OpCode_result",
            QFT_OTHER,
            "Opcode results",
            lambda c, j: [o.result for o in j.ops],
        ),
        Field("oplog", "OpCode_log", QFT_OTHER, "Opcode logs", lambda c, j: [o.log for o in j.ops]),
        Field(
            "opstart",
            "OpCode_start",
            QFT_OTHER,
            "Opcode start times",
            lambda c, j: [o.start_ts for o in j.ops],
        ),
        Field(
            "opexec",
            "OpCode_exec",
            QFT_OTHER,
            "Opcode execution times",
            lambda c, j: [o.exec_ts for o in j.ops],
        ),
        Field(
            "opend",
            "OpCode_end",
            QFT_OTHER,
            "Opcode end times",
            lambda c, j: [o.end_ts for o in j.ops],
        ),
        Field(
            "oppriority",
            "OpCode_prio",
            QFT_OTHER,
            "Opcode priorities",
            lambda c, j: [o.priority for o in j.ops],
        ),
        Field("received_ts", "Received", QFT_TIMESTAMP, "Received", lambda c, j: j.received_ts),
        Field("start_ts", "Start", QFT_TIMESTAMP, "Started", lambda c, j: j.start_ts),
        Field("end_ts", "End", QFT_TIMESTAMP, "Ended", lambda c, j: j.end_ts),
        Field("archived", "Archived", QFT_BOOL, "Archived", lambda c, j: j.archived),
    ]
    return {x.name: x for x in f}


FIELDS: dict[str, dict[str, Field]] = {
    "instance": _instance_fields(),
    "node": _node_fields(),
    "group": _group_fields(),
    "job": _job_fields(),
}


def resolve_fields(what: str, names: Iterable[str]) -> list[Field]:
    table = FIELDS.get(what)
    if table is None:
        raise ParameterError("what", f"unknown resource {what!r}; known: {', '.join(FIELDS)}")
    out = []
    for n in names:
        if n not in table:
            raise ParameterError("fields", f"unknown field {n!r} for {what}s")
        out.append(table[n])
    return out


# --- filters ---------------------------------------------------------------------------

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "=[]": lambda a, b: isinstance(a, list) and b in a,
}

Row = Callable[[str], Any]


def compile_filter(what: str, flt: Any) -> tuple[Callable[[Row], bool], set[str]]:
    """Compile a Ganeti filter list into a predicate; returns it and the fields it uses."""
    used: set[str] = set()
    table = FIELDS[what]

    def comp(node: Any) -> Callable[[Row], bool]:
        if not isinstance(node, list) or not node or not isinstance(node[0], str):
            raise ParameterError("filter", f"invalid filter element {node!r}")
        op, args = node[0], node[1:]
        if op in ("&", "|"):
            subs = [comp(a) for a in args]
            if op == "&":
                return lambda row: all(s(row) for s in subs)
            return lambda row: any(s(row) for s in subs)
        if op == "!":
            if len(args) != 1:
                raise ParameterError("filter", "'!' takes exactly one operand")
            sub = comp(args[0])
            return lambda row: not sub(row)
        if op == "?":
            if len(args) != 1:
                raise ParameterError("filter", "'?' takes exactly one field")
            fname = _field(args[0])
            return lambda row: bool(_val(row(fname)))
        if op in _CMP or op == "=~":
            if len(args) != 2:
                raise ParameterError("filter", f"{op!r} takes a field and a value")
            fname = _field(args[0])
            value = args[1]
            if op == "=~":
                try:
                    rx = re.compile(str(value))
                except re.error as err:
                    raise ParameterError("filter", f"invalid regular expression: {err}") from None
                return lambda row: (
                    isinstance(_val(row(fname)), str) and bool(rx.search(_val(row(fname))))
                )
            cmp = _CMP[op]

            def pred(row: Row) -> bool:
                v = _val(row(fname))
                try:
                    return cmp(v, value)
                except TypeError:
                    return False

            return pred
        raise ParameterError("filter", f"unknown filter operator {op!r}")

    def _field(name: Any) -> str:
        if not isinstance(name, str) or name not in table:
            raise ParameterError("filter", f"unknown field {name!r} for {what}s")
        used.add(name)
        return name

    if flt is None:
        return (lambda row: True), used
    return comp(flt), used


def _val(v: Any) -> Any:
    return None if isinstance(v, _NoData) else v


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
