"""The fields of ``gnt-network list`` (Ganeti's names, plus ``ovn_switch``).

Layer: master core (queries). Config only, no live data. Corral keeps no IP
pool, so Ganeti's ``free_count``, ``reserved_count``, ``map`` and
``external_reservations`` do not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral import objects
from corral.config.writer import ConfigWriter
from corral.query.base import QFT_NUMBER, QFT_OTHER, QFT_TEXT, QFT_TIMESTAMP, Field, _nicesort_key


@dataclass
class NetworkCtx:
    """Who uses each network, computed once per query."""

    cfg: ConfigWriter
    groups: dict[str, list[list[str]]]  # network uuid -> [[group, mode, link, vlan], …]
    instances: dict[str, list[str]]  # network uuid -> instance names

    @classmethod
    def build(cls, cfg: ConfigWriter) -> NetworkCtx:
        groups: dict[str, list[list[str]]] = {}
        for g in sorted(cfg.data.nodegroups.values(), key=lambda g: _nicesort_key(g.name)):
            for uuid, p in g.networks.items():
                groups.setdefault(uuid, []).append(
                    [g.name, str(p.get("mode", "")), str(p.get("link", "")), str(p.get("vlan", ""))]
                )
        instances: dict[str, list[str]] = {}
        for inst in sorted(cfg.data.instances.values(), key=lambda i: _nicesort_key(i.name)):
            for uuid in dict.fromkeys(n.network for n in inst.nics if n.network):
                instances.setdefault(uuid, []).append(inst.name)
        return cls(cfg, groups, instances)


def _network_fields() -> dict[str, Field]:
    def groups(c: NetworkCtx, n: objects.Network) -> list[list[str]]:
        return c.groups.get(n.uuid, [])

    def insts(c: NetworkCtx, n: objects.Network) -> list[str]:
        return c.instances.get(n.uuid, [])

    f = [
        Field("name", "Network", QFT_TEXT, "Name", lambda c, n: n.name),
        Field("uuid", "UUID", QFT_TEXT, "Network UUID", lambda c, n: n.uuid),
        Field("network", "Subnet", QFT_TEXT, "IPv4 subnet", lambda c, n: n.network),
        Field("gateway", "Gateway", QFT_TEXT, "IPv4 gateway", lambda c, n: n.gateway),
        Field("network6", "IPv6Subnet", QFT_TEXT, "IPv6 subnet", lambda c, n: n.network6),
        Field("gateway6", "IPv6Gateway", QFT_TEXT, "IPv6 gateway", lambda c, n: n.gateway6),
        Field("mac_prefix", "MacPrefix", QFT_TEXT, "MAC address prefix", lambda c, n: n.mac_prefix),
        Field(
            "ovn_switch",
            "OVNSwitch",
            QFT_TEXT,
            "OVN logical switch backing the network (Corral)",
            lambda c, n: n.ovn_switch,
        ),
        Field(
            "group_list",
            "GroupList",
            QFT_OTHER,
            "List of node groups (group name, NIC mode, NIC link, NIC VLAN)",
            groups,
        ),
        Field(
            "group_cnt",
            "NodeGroups",
            QFT_NUMBER,
            "Number of node groups",
            lambda c, n: len(groups(c, n)),
        ),
        Field("inst_list", "InstanceList", QFT_OTHER, "List of instances", insts),
        Field(
            "inst_cnt",
            "Instances",
            QFT_NUMBER,
            "Number of instances",
            lambda c, n: len(insts(c, n)),
        ),
        Field("tags", "Tags", QFT_OTHER, "Tags", lambda c, n: list(n.tags)),
        Field("serial_no", "SerialNo", QFT_NUMBER, "Serial number", lambda c, n: n.serial_no),
        Field("ctime", "CTime", QFT_TIMESTAMP, "Creation time", lambda c, n: n.ctime),
        Field("mtime", "MTime", QFT_TIMESTAMP, "Modification time", lambda c, n: n.mtime),
    ]
    return {x.name: x for x in f}
