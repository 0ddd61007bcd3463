"""The master's in-memory configuration and its group-committing writer.

Layer: config (used by logical units and queries in ``corral-masterd``).
All mutations run on the master's event loop without awaiting in between,
so two jobs can never interleave inside one change; each mutation bumps the
object's and the cluster's serial numbers. :meth:`ConfigWriter.commit`
waits until the change is on disk: concurrent commits are coalesced into one
atomic write of the newest state (group commit), so a thousand small jobs do
not cost a thousand writes of a large config.

Optimistic concurrency: :meth:`ConfigWriter.update` refuses an object whose
serial is not the stored one, so a change computed from a stale copy can
never silently overwrite another job's change.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from corral.config import store
from corral.errors import ConfigError, ECode, OpPrereqError
from corral.objects import (
    Cluster,
    ConfigData,
    ConfigObject,
    Disk,
    Instance,
    Network,
    Node,
    NodeGroup,
)

ObjT = TypeVar("ObjT", bound=ConfigObject)

log = logging.getLogger(__name__)

CommitListener = Callable[[int, bytes], None]  # (serial written, file contents)


class ConfigWriter:
    def __init__(self, path: Path, data: ConfigData) -> None:
        self.path = path
        self.data = data
        self._written_serial = data.serial_no
        self._writer: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._reserved_macs: set[str] = set()
        self.listeners: list[CommitListener] = []
        self.write_count = 0
        self._reindex()

    @classmethod
    def load(cls, path: Path) -> ConfigWriter:
        return cls(path, store.load(path))

    # --- indexes ----------------------------------------------------------------

    def _reindex(self) -> None:
        d = self.data
        self._inst_by_name = {i.name: u for u, i in d.instances.items()}
        self._node_by_name = {n.name: u for u, n in d.nodes.items()}
        self._group_by_name = {g.name: u for u, g in d.nodegroups.items()}
        self._net_by_name = {n.name: u for u, n in d.networks.items()}
        self._macs = {nic.mac for i in d.instances.values() for nic in i.nics}

    # --- lookups ----------------------------------------------------------------

    @property
    def cluster(self) -> Cluster:
        return self.data.cluster

    @property
    def serial(self) -> int:
        return self.data.serial_no

    @property
    def master_node(self) -> Node:
        return self.data.nodes[self.data.cluster.master_node]

    def instance_by_name(self, name: str) -> Instance | None:
        u = self._inst_by_name.get(name)
        return self.data.instances[u] if u else None

    def node_by_name(self, name: str) -> Node | None:
        u = self._node_by_name.get(name)
        return self.data.nodes[u] if u else None

    def group_by_name(self, name: str) -> NodeGroup | None:
        u = self._group_by_name.get(name)
        return self.data.nodegroups[u] if u else None

    def network_by_name(self, name: str) -> Network | None:
        u = self._net_by_name.get(name)
        return self.data.networks[u] if u else None

    def expand_instance(self, name: str) -> Instance:
        inst = self.instance_by_name(name) or self.data.instances.get(name)
        if inst is None:
            raise OpPrereqError(f"instance '{name}' not known", ECode.NOENT)
        return inst

    def expand_node(self, name: str) -> Node:
        node = self.node_by_name(name) or self.data.nodes.get(name)
        if node is None:
            raise OpPrereqError(f"node '{name}' not known", ECode.NOENT)
        return node

    def expand_group(self, name: str) -> NodeGroup:
        g = self.group_by_name(name) or self.data.nodegroups.get(name)
        if g is None:
            raise OpPrereqError(f"node group '{name}' not known", ECode.NOENT)
        return g

    def expand_network(self, name: str) -> Network:
        net = self.network_by_name(name) or self.data.networks.get(name)
        if net is None:
            raise OpPrereqError(f"network '{name}' not known", ECode.NOENT)
        return net

    def node_group(self, node: Node) -> NodeGroup:
        return self.data.nodegroups[node.group]

    def instance_disks(self, inst: Instance) -> list[Disk]:
        return [self.data.disks[u] for u in inst.disks]

    def node_instances(self, node_uuid: str) -> list[Instance]:
        return [i for i in self.data.instances.values() if i.primary_node == node_uuid]

    def mac_in_use(self, mac: str) -> bool:
        return mac in self._macs or mac in self._reserved_macs

    def generate_mac(self, prefix: str | None = None) -> str:
        """A MAC under ``prefix`` (default: the cluster's), unused and reserved for the caller."""
        prefix = prefix or self.cluster.mac_prefix
        for _ in range(1000):
            mac = prefix + ":" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
            if not self.mac_in_use(mac):
                self._reserved_macs.add(mac)
                return mac
        raise OpPrereqError("cannot generate a unique MAC address", ECode.NORES)

    def reserve_mac(self, mac: str) -> None:
        if self.mac_in_use(mac):
            raise OpPrereqError(f"MAC address {mac} already in use in the cluster", ECode.EXISTS)
        self._reserved_macs.add(mac)

    # --- mutations ----------------------------------------------------------------

    def _touch(self, obj: ConfigObject) -> None:
        obj.serial_no += 1
        obj.mtime = time.time()
        self._bump()

    def _bump(self) -> None:
        self.data.serial_no += 1
        self.data.mtime = time.time()

    def copy(self, obj: ObjT) -> ObjT:
        """A private copy of a config object to modify and pass to :meth:`update`."""
        return copy.deepcopy(obj)

    def update(self, obj: ObjT) -> ObjT:
        """Store a modified copy of an object; refuse it if it is stale."""
        table = self._table_for(obj)
        if isinstance(obj, Cluster):
            current: ConfigObject = self.data.cluster
        else:
            assert table is not None
            if obj.uuid not in table:
                raise ConfigError(
                    f"{type(obj).__name__} {obj.uuid} is no longer in the config", ECode.NOENT
                )
            current = table[obj.uuid]
        if current.serial_no != obj.serial_no:
            raise ConfigError(
                f"{type(obj).__name__} {obj.uuid} was modified concurrently "
                f"(serial {current.serial_no}, update based on {obj.serial_no})",
                ECode.STATE,
            )
        self._touch(obj)
        if isinstance(obj, Cluster):
            self.data.cluster = obj
        else:
            assert table is not None
            table[obj.uuid] = obj
            if isinstance(obj, Instance):
                assert isinstance(current, Instance)
                self._macs -= {n.mac for n in current.nics}  # removed NICs free their MAC
                self._macs |= {n.mac for n in obj.nics}
                self._reserved_macs -= {n.mac for n in obj.nics}
        if isinstance(obj, Instance | Node | NodeGroup | Network):
            self._reindex()
        return obj

    def _table_for(self, obj: ConfigObject) -> dict[str, ConfigObject] | None:
        d = self.data
        tables: dict[type, dict[str, ConfigObject]] = {
            Instance: d.instances,  # type: ignore[dict-item]
            Node: d.nodes,  # type: ignore[dict-item]
            NodeGroup: d.nodegroups,  # type: ignore[dict-item]
            Network: d.networks,  # type: ignore[dict-item]
            Disk: d.disks,  # type: ignore[dict-item]
        }
        return tables.get(type(obj))

    def add_instance(self, inst: Instance, disks: list[Disk]) -> None:
        if inst.name in self._inst_by_name:
            raise OpPrereqError(f"instance '{inst.name}' already exists", ECode.EXISTS)
        for d in disks:
            self.data.disks[d.uuid] = d
        inst.disks = [d.uuid for d in disks]
        self.data.instances[inst.uuid] = inst
        self._inst_by_name[inst.name] = inst.uuid
        for nic in inst.nics:
            self._macs.add(nic.mac)
            self._reserved_macs.discard(nic.mac)
        self._bump()

    def add_instance_disk(self, inst: Instance, disk: Disk, index: int) -> Instance:
        """Attach a new disk to ``inst`` (a copy) at ``index``; returns the stored instance."""
        if disk.uuid in self.data.disks:
            raise ConfigError(f"disk {disk.uuid} already exists", ECode.EXISTS)
        inst.disks.insert(index, disk.uuid)
        updated = self.update(inst)
        self.data.disks[disk.uuid] = disk
        return updated

    def remove_instance_disk(self, inst: Instance, disk_uuid: str) -> Instance:
        """Detach and forget a disk of ``inst`` (a copy); its data is the caller's business."""
        inst.disks.remove(disk_uuid)
        updated = self.update(inst)
        self.data.disks.pop(disk_uuid, None)
        return updated

    def remove_instance(self, uuid: str) -> None:
        inst = self.data.instances.pop(uuid)
        for d in inst.disks:
            self.data.disks.pop(d, None)
        self._inst_by_name.pop(inst.name, None)
        for nic in inst.nics:
            self._macs.discard(nic.mac)
        self._bump()

    def add_node(self, node: Node) -> None:
        if node.name in self._node_by_name:
            raise OpPrereqError(f"node '{node.name}' already exists", ECode.EXISTS)
        self.data.nodes[node.uuid] = node
        self._node_by_name[node.name] = node.uuid
        self._bump()

    def remove_node(self, uuid: str) -> None:
        node = self.data.nodes.pop(uuid)
        self._node_by_name.pop(node.name, None)
        self._bump()

    def add_network(self, net: Network) -> None:
        if net.name in self._net_by_name:
            raise OpPrereqError(f"network '{net.name}' already exists", ECode.EXISTS)
        self.data.networks[net.uuid] = net
        self._net_by_name[net.name] = net.uuid
        self._bump()

    def remove_network(self, uuid: str) -> None:
        net = self.data.networks.pop(uuid)
        self._net_by_name.pop(net.name, None)
        self._bump()

    # --- durability -----------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self.data.serial_no > self._written_serial

    async def commit(self) -> None:
        """Return once every change made so far is durably on disk."""
        target = self.data.serial_no
        if target <= self._written_serial:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())
        await fut

    async def _write_loop(self) -> None:
        while self.dirty:
            serial = self.data.serial_no
            blob = store.encode(self.data)  # consistent snapshot: no await above
            try:
                await asyncio.to_thread(store.write_atomic, self.path, blob)
            except OSError as err:
                failure = ConfigError(f"cannot write {self.path}: {err}")
                for _, fut in self._waiters:
                    if not fut.done():
                        fut.set_exception(failure)
                self._waiters.clear()
                return
            self.write_count += 1
            self._written_serial = serial
            for listener in self.listeners:
                try:
                    listener(serial, blob)
                except Exception:  # a listener must never stall committers
                    log.exception("config commit listener failed")
            still: list[tuple[int, asyncio.Future[None]]] = []
            for target, fut in self._waiters:
                if target <= serial:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((target, fut))
            self._waiters = still

    def write_sync(self) -> None:
        """Write now, blocking (start-up and tools outside the event loop)."""
        store.save(self.path, self.data)
        self._written_serial = self.data.serial_no
        self.write_count += 1
