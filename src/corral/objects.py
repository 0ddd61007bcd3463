"""The configuration object model: typed records with Ganeti's layout.

Layer: bottom (imports ``params``, ``errors``). Every object has a UUID, a
serial number, ctime/mtime and tags. ``ConfigData`` is what ``config.data``
holds; the field names follow Ganeti's ``objects.py`` so tools that read a
Ganeti config can read ours.

Parameter overrides are stored as ``{name: value}`` maps and validated by the
groups in :mod:`corral.params`; use :func:`fill_be` & co. to get the typed,
inherited values (cluster → node group → instance).
"""

from __future__ import annotations

import time
import uuid as uuid_mod
from typing import Any, Literal

import msgspec

from corral import params

CONFIG_VERSION = 1
"""Version of ``config.data``'s layout; a newer file is refused, never rewritten."""

Overrides = dict[str, Any]

AdminState = Literal["up", "down", "offline"]


def new_uuid() -> str:
    return str(uuid_mod.uuid4())


def now() -> float:
    return time.time()


class ConfigObject(msgspec.Struct, kw_only=True):
    """Fields every configuration object has."""

    uuid: str = msgspec.field(default_factory=new_uuid)
    serial_no: int = 1
    ctime: float = msgspec.field(default_factory=now)
    mtime: float = msgspec.field(default_factory=now)
    tags: list[str] = []


class Disk(ConfigObject, kw_only=True):
    name: str | None = None
    dev_type: str = "file"
    size: int  # MiB
    mode: Literal["rw", "ro"] = "rw"
    logical_id: list[str] = []
    iv_name: str = ""
    params: Overrides = {}
    spindles: int | None = None


class NIC(ConfigObject, kw_only=True):
    name: str | None = None
    mac: str
    ip: str | None = None
    network: str | None = None  # network UUID
    nicparams: Overrides = {}


class Instance(ConfigObject, kw_only=True):
    name: str
    primary_node: str  # node UUID
    os: str = ""
    hypervisor: str
    hvparams: Overrides = {}
    beparams: Overrides = {}
    osparams: Overrides = {}
    admin_state: AdminState = "down"
    admin_state_source: str = "admin"
    nics: list[NIC] = []
    disks: list[str] = []  # disk UUIDs, in order
    disk_template: str = "diskless"
    disks_active: bool = False
    network_port: int | None = None


class Node(ConfigObject, kw_only=True):
    name: str
    primary_ip: str = "127.0.0.1"
    secondary_ip: str = "127.0.0.1"
    group: str  # node group UUID
    master_candidate: bool = True
    offline: bool = False
    drained: bool = False
    vm_capable: bool = True
    master_capable: bool = True
    ndparams: Overrides = {}
    cert_serial: int = 0  # serial of the node's certificate (revoked on removal)


class NodeGroup(ConfigObject, kw_only=True):
    name: str
    alloc_policy: Literal["preferred", "last_resort", "unallocable"] = "preferred"
    ndparams: Overrides = {}
    hvparams: dict[str, Overrides] = {}
    beparams: Overrides = {}
    nicparams: Overrides = {}
    diskparams: dict[str, Overrides] = {}
    networks: dict[str, Overrides] = {}  # network UUID -> nicparams


class Network(ConfigObject, kw_only=True):
    name: str
    network: str | None = None
    gateway: str | None = None
    network6: str | None = None
    gateway6: str | None = None
    mac_prefix: str | None = None
    ovn_switch: str | None = None  # OVN logical switch backing the network (NIC mode ovn)


class Cluster(ConfigObject, kw_only=True):
    cluster_name: str
    master_node: str  # node UUID
    master_ip: str = "127.0.0.1"
    master_netdev: str = "lo"
    enabled_hypervisors: list[str] = msgspec.field(default_factory=lambda: ["fake"])
    hvparams: dict[str, Overrides] = {}
    beparams: dict[str, Overrides] = {}  # {"default": {...}} as in Ganeti
    nicparams: dict[str, Overrides] = {}
    diskparams: dict[str, Overrides] = {}
    enabled_disk_templates: list[str] = msgspec.field(
        default_factory=lambda: ["diskless", "file", "sharedfile"]
    )
    mac_prefix: str = "aa:00:00"
    file_storage_dir: str = ""
    shared_file_storage_dir: str = ""
    candidate_pool_size: int = 10
    default_iallocator: str = ""
    max_running_jobs: int = 20
    hotplug_by_default: bool = True
    noded_port: int = 1811
    ovn_nb: str = ""  # OVN northbound database remote (tcp:HOST:PORT, …); empty: no OVN
    revoked_certs: list[int] = []  # serials of node certificates revoked by node removal


class ConfigData(msgspec.Struct, kw_only=True):
    """The whole of ``config.data``."""

    version: int = CONFIG_VERSION
    cluster: Cluster
    nodegroups: dict[str, NodeGroup] = {}
    nodes: dict[str, Node] = {}
    instances: dict[str, Instance] = {}
    disks: dict[str, Disk] = {}
    networks: dict[str, Network] = {}
    serial_no: int = 1
    ctime: float = msgspec.field(default_factory=now)
    mtime: float = msgspec.field(default_factory=now)


# --- parameter inheritance ----------------------------------------------------


def cluster_default(mapping: dict[str, Overrides]) -> Overrides:
    return mapping.get("default", {})


def fill_be(cluster: Cluster, group: NodeGroup | None, inst: Instance) -> params.BeParams:
    return params.BE.fill(
        cluster_default(cluster.beparams), group.beparams if group else None, inst.beparams
    )


def fill_nic(cluster: Cluster, group: NodeGroup | None, nic: NIC) -> params.NicParams:
    return params.NIC.fill(
        cluster_default(cluster.nicparams), group.nicparams if group else None, nic.nicparams
    )


def fill_disk(cluster: Cluster, group: NodeGroup | None, template: str) -> Any:
    g = params.disk_group(template)
    return g.fill(
        cluster.diskparams.get(template), group.diskparams.get(template) if group else None
    )
