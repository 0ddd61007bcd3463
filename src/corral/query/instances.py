"""The fields of ``gnt-instance list`` (Ganeti's names), with live data.

Layer: master core (queries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral import hypervisor, objects, params
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
    UNAVAIL,
    Field,
    _NoData,
)
from corral.rpc import types as t
from corral.rpc.client import RpcResult

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
    if live is not None and live.state == "shutdown":
        # The guest powered itself off (Ganeti's user shutdown): not an error.
        return "USER_down" if inst.admin_state == "up" else "ADMIN_down"
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


def _network_name(cfg: ConfigWriter, uuid: str | None) -> str | None:
    net = cfg.data.networks.get(uuid) if uuid else None
    return net.name if net else None


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
        Field(
            "nic.networks",
            "NIC_networks",
            QFT_OTHER,
            "NIC networks (UUIDs)",
            lambda c, i: [n.network for n in i.nics],
        ),
        Field(
            "nic.networks.names",
            "NIC_networks_names",
            QFT_OTHER,
            "NIC networks (names)",
            lambda c, i: [_network_name(c.cfg, n.network) for n in i.nics],
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
