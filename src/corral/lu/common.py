"""Helpers shared by logical units: instance specs, hook environments, checks.

Layer: logical units. Pure functions of the config (no RPC here).
"""

from __future__ import annotations

from typing import Any

import msgspec

from corral import hypervisor, objects, params
from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError
from corral.objects import Instance, Node
from corral.rpc.types import DiskSpec, InstanceSpec, NicSpec


def network_env(cfg: ConfigWriter, network_uuid: str | None) -> dict[str, str]:
    if not network_uuid or network_uuid not in cfg.data.networks:
        return {}
    net = cfg.data.networks[network_uuid]
    env = {"NETWORK_NAME": net.name, "NETWORK_UUID": net.uuid, "NETWORK_TAGS": " ".join(net.tags)}
    for key, value in (
        ("SUBNET", net.network),
        ("GATEWAY", net.gateway),
        ("SUBNET6", net.network6),
        ("GATEWAY6", net.gateway6),
        ("MAC_PREFIX", net.mac_prefix),
    ):
        if value:
            env[f"NETWORK_{key}"] = value
    return env


def disk_spec(cfg: ConfigWriter, inst: Instance, idx: int, disk: objects.Disk) -> DiskSpec:
    group = cfg.node_group(cfg.data.nodes[inst.primary_node])
    filled = params.disk_group(inst.disk_template).fill_dict(
        cfg.cluster.diskparams.get(inst.disk_template),
        group.diskparams.get(inst.disk_template),
    )
    return DiskSpec(
        uuid=disk.uuid,
        name=disk.name,
        index=idx,
        dev_type=disk.dev_type,
        size=disk.size,
        mode=disk.mode,
        path=disk.logical_id[1] if len(disk.logical_id) > 1 else None,
        params=filled,
    )


def instance_spec(
    cfg: ConfigWriter,
    inst: Instance,
    hvparams: dict[str, Any] | None = None,
    beparams: dict[str, Any] | None = None,
) -> InstanceSpec:
    """Everything a node needs to run ``inst``, parameters inherited and filled."""
    node = cfg.data.nodes[inst.primary_node]
    group = cfg.node_group(node)
    hv = hypervisor.fill_hv(cfg.cluster, group, inst)
    if hvparams:
        hv.update(hvparams)
    be = params.BE.fill(
        objects.cluster_default(cfg.cluster.beparams), group.beparams, inst.beparams, beparams
    )
    nics = [
        NicSpec(
            uuid=n.uuid,
            name=n.name,
            index=i,
            mac=n.mac,
            ip=n.ip,
            nicparams=objects.fill_nic(cfg.cluster, group, n),
            network=network_env(cfg, n.network),
        )
        for i, n in enumerate(inst.nics)
    ]
    disks = [disk_spec(cfg, inst, i, d) for i, d in enumerate(cfg.instance_disks(inst))]
    return InstanceSpec(
        name=inst.name,
        uuid=inst.uuid,
        hypervisor=inst.hypervisor,
        os=inst.os,
        hvparams=hv,
        beparams=be,
        nics=nics,
        disks=disks,
        tags=list(inst.tags),
        ctime=inst.ctime,
        mtime=inst.mtime,
        network_port=inst.network_port,
    )


def needed_bridges(
    cfg: ConfigWriter, hv_name: str, node: Node, nics: list[objects.NIC]
) -> list[str]:
    """Bridges ``nics`` need on ``node``; none for a hypervisor that plugs no NICs
    into the node's network (the fake one)."""
    if not hypervisor.hv_class(hv_name).ATTACHES_NICS:
        return []
    group = cfg.node_group(node)
    return sorted(
        {
            p.link
            for p in (objects.fill_nic(cfg.cluster, group, nic) for nic in nics)
            if p.mode == "bridged"
        }
    )


def instance_hook_env(cfg: ConfigWriter, inst: Instance) -> dict[str, str]:
    """Ganeti's ``BuildInstanceHookEnvByObject`` (keys without ``GANETI_``)."""
    spec = instance_spec(cfg, inst)
    be = spec.beparams
    env: dict[str, str] = {
        "INSTANCE_NAME": inst.name,
        "INSTANCE_UUID": inst.uuid,
        "INSTANCE_PRIMARY": cfg.data.nodes[inst.primary_node].name,
        "INSTANCE_SECONDARIES": "",
        "INSTANCE_OS_TYPE": inst.os,
        "INSTANCE_STATUS": inst.admin_state,
        "INSTANCE_MINMEM": str(be.minmem),
        "INSTANCE_MAXMEM": str(be.maxmem),
        "INSTANCE_MEMORY": str(be.maxmem),  # backwards compatibility, as in Ganeti
        "INSTANCE_VCPUS": str(be.vcpus),
        "INSTANCE_DISK_TEMPLATE": inst.disk_template,
        "INSTANCE_HYPERVISOR": inst.hypervisor,
        "INSTANCE_NIC_COUNT": str(len(spec.nics)),
        "INSTANCE_DISK_COUNT": str(len(spec.disks)),
        "INSTANCE_TAGS": " ".join(inst.tags),
    }
    for n in spec.nics:
        p = f"INSTANCE_NIC{n.index}_"
        env[p + "MAC"] = n.mac
        env[p + "IP"] = n.ip or ""
        env[p + "MODE"] = n.nicparams.mode
        env[p + "LINK"] = n.nicparams.link
        env[p + "VLAN"] = n.nicparams.vlan
        env[p + "UUID"] = n.uuid
        env[p + "NAME"] = n.name or ""
        if n.nicparams.mode == "bridged":
            env[p + "BRIDGE"] = n.nicparams.link
        for k, v in n.network.items():
            env[p + k] = v
    for d in spec.disks:
        p = f"INSTANCE_DISK{d.index}_"
        env[p + "SIZE"] = str(d.size)
        env[p + "MODE"] = d.mode
        env[p + "UUID"] = d.uuid
        env[p + "NAME"] = d.name or ""
    for k, v in msgspec.structs.asdict(be).items():
        env[f"INSTANCE_BE_{k}"] = _hookval(v)
    for k, v in spec.hvparams.items():
        env[f"INSTANCE_HV_{k}"] = _hookval(v)
    return env


def _hookval(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    return str(v)


def check_node_online(node: Node, what: str = "") -> None:
    if node.offline:
        raise OpPrereqError(f"node {node.name} is offline{what}", ECode.STATE)


def check_node_vm_capable(node: Node) -> None:
    if not node.vm_capable:
        raise OpPrereqError(f"node {node.name} is not vm-capable", ECode.STATE)


def check_node_not_drained(node: Node) -> None:
    if node.drained:
        raise OpPrereqError(f"node {node.name} is drained", ECode.STATE)
