"""The fields of ``gnt-node list`` (Ganeti's names), with live data.

Layer: master core (queries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral import objects
from corral.config.writer import ConfigWriter
from corral.query.base import (
    NODATA,
    OFFLINE,
    QFT_BOOL,
    QFT_NUMBER,
    QFT_OTHER,
    QFT_TEXT,
    QFT_TIMESTAMP,
    QFT_UNIT,
    Field,
    _nicesort_key,
)
from corral.rpc import types as t
from corral.rpc.client import RpcResult

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
