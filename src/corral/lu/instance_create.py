"""Instance creation: validate the request, create the disks, add, start.

Layer: logical units. Disks are created on the primary node through RPC;
if a later disk fails, only the disks this job just created (empty, never
given to anyone) are removed again.
"""

from __future__ import annotations

import os

from corral import hypervisor, objects, params
from corral.errors import ECode, OpExecError, OpPrereqError, ParameterError
from corral.locking import Level
from corral.lu import devices, network_checks, ovn
from corral.lu import os as os_lu
from corral.lu.base import LogicalUnit, register
from corral.lu.common import (
    check_node_not_drained,
    check_node_online,
    check_node_vm_capable,
    disk_spec,
    instance_hook_env,
    instance_spec,
    needed_bridges,
)
from corral.objects import NIC, Disk, Instance
from corral.opcodes import (
    OpInstanceCreate,
)
from corral.rpc import defs
from corral.rpc import types as t


@register(OpInstanceCreate)
class LUInstanceCreate(LogicalUnit[OpInstanceCreate]):
    HPATH = "instance-add"
    HTYPE = "INSTANCE"

    def expand_names(self) -> None:
        op = self.op
        if self.cfg.instance_by_name(op.instance_name) is not None:
            raise OpPrereqError(f"instance '{op.instance_name}' already exists", ECode.EXISTS)
        if op.mode != "create":
            raise ParameterError("mode", "only mode 'create' is supported")
        if op.snode:
            raise ParameterError("snode", f"disk template {op.disk_template} has no secondary")
        if op.pnode:
            self.pnode = self.cfg.expand_node(op.pnode)
        elif op.iallocator or self.cfg.cluster.default_iallocator:
            raise ParameterError(
                "iallocator", "instance allocators are not available yet; give the node with -n"
            )
        else:
            capable = [
                n
                for n in self.cfg.data.nodes.values()
                if n.vm_capable and not n.offline and not n.drained
            ]
            if len(capable) != 1:
                raise ParameterError(
                    "pnode", "no primary node given (-n) and no default instance allocator"
                )
            self.pnode = capable[0]
        self.needed_locks[Level.INSTANCE] = [op.instance_name]
        self.needed_locks[Level.NODE] = [self.pnode.uuid]
        self.needed_locks[Level.NODE_RES] = [self.pnode.uuid]
        # Shared: no network is disconnected or removed while NICs are put on it.
        nets = [self.cfg.network_by_name(nd.network) for nd in op.nics if nd.network]
        net_uuids = sorted({n.uuid for n in nets if n is not None})
        if net_uuids:
            self.needed_locks[Level.NETWORK] = net_uuids
            self.share_locks[Level.NETWORK] = True

    def check_prereq(self) -> None:
        op, cfg = self.op, self.cfg
        cluster = cfg.cluster
        if cfg.instance_by_name(op.instance_name) is not None:
            raise OpPrereqError(f"instance '{op.instance_name}' already exists", ECode.EXISTS)
        if self.pnode.uuid not in cfg.data.nodes:
            raise OpPrereqError(f"node {self.pnode.name} was removed", ECode.NOENT)
        check_node_online(self.pnode)
        check_node_not_drained(self.pnode)
        check_node_vm_capable(self.pnode)
        group = cfg.node_group(self.pnode)

        self.hv_name = op.hypervisor or cluster.enabled_hypervisors[0]
        hypervisor.hv_class(self.hv_name)
        if self.hv_name not in cluster.enabled_hypervisors:
            raise ParameterError(
                "hypervisor",
                f"hypervisor {self.hv_name} is not enabled in "
                f"the cluster ({', '.join(cluster.enabled_hypervisors)})",
            )
        hvg = hypervisor.params_for(self.hv_name)
        self.hvparams = hvg.check_overrides(op.hvparams, "hvparams")
        self.hv_filled = hvg.fill_dict(
            cluster.hvparams.get(self.hv_name), group.hvparams.get(self.hv_name), self.hvparams
        )
        hypervisor.hv_class(self.hv_name).check_syntax(self.hv_filled)
        self.beparams = params.BE.check_overrides(op.beparams, "beparams")
        self.be = params.BE.fill(
            objects.cluster_default(cluster.beparams), group.beparams, self.beparams
        )
        if self.be.minmem > self.be.maxmem:
            raise ParameterError(
                "beparams/minmem",
                f"minmem ({self.be.minmem}) is larger than maxmem ({self.be.maxmem})",
            )

        if op.disk_template not in cluster.enabled_disk_templates:
            params.disk_group(op.disk_template)
            raise ParameterError(
                "disk_template",
                f"disk template {op.disk_template} is not "
                f"enabled ({', '.join(cluster.enabled_disk_templates)})",
            )
        if op.disk_template == "diskless" and op.disks:
            raise ParameterError("disks", "the diskless template takes no disks")
        if op.disk_template != "diskless" and not op.disks:
            raise ParameterError("disks", f"template {op.disk_template} needs at least one disk")
        if len(op.disks) > 16:
            raise ParameterError("disks", "at most 16 disks")
        if len(op.nics) > 8:
            raise ParameterError("nics", "at most 8 NICs")

        self.nics: list[NIC] = []
        seen_macs: set[str] = set()
        for i, nd in enumerate(op.nics):
            field = f"nics[{i}]"
            overrides = {
                k: v
                for k, v in (("mode", nd.mode), ("link", nd.link), ("vlan", nd.vlan))
                if v is not None
            }
            nicparams = params.NIC.check_overrides(overrides, field)
            net_uuid = None
            net = None
            if nd.network and nd.network.lower() != "none":
                net = cfg.network_by_name(nd.network)
                if net is None:
                    raise OpPrereqError(f"{field}: network '{nd.network}' not known", ECode.NOENT)
                net_uuid = net.uuid
                # mode/link/vlan come from the network's connection to the node's group
                nicparams = network_checks.nic_network_params(group, net, overrides, field)
            filled = params.NIC.fill(
                objects.cluster_default(cluster.nicparams), group.nicparams, nicparams
            )
            network_checks.check_ovn_mode(filled.mode, net, f"{field}/mode")
            ip = None if nd.ip in (None, "none") else nd.ip
            if ip == "pool":
                raise ParameterError(f"{field}.ip", "IP pools need a network with a pool")
            network_checks.check_nic_ip(net, ip, field)
            if filled.mode == "routed" and not ip:
                raise ParameterError(f"{field}.ip", "routed NICs need an IP address")
            mac = devices.check_mac(cfg, field, nd.mac, seen_macs)
            self.nics.append(
                NIC(mac=mac, ip=ip, network=net_uuid, nicparams=nicparams, name=nd.name)
            )
        names = [n.name for n in self.nics if n.name]
        if len(names) != len(set(names)):
            raise ParameterError("nics", "duplicate NIC names")
        self.osparams = os_lu.check_create_args(op)
        self.dry_run_result = [self.pnode.name]

    async def check_prereq_nodes(self) -> None:
        await self._check_node_side()
        if self.op.os_type:  # the OS, its variant and parameters, on the primary node
            await os_lu.check_instance_os(
                self, self.pnode, self.op.os_type, self.osparams, self.op.force_variant
            )

    def build_hooks_env(self) -> dict[str, str]:
        inst = self.cfg.instance_by_name(self.op.instance_name)
        if inst is not None:
            env = instance_hook_env(self.cfg, inst)
        else:
            env = {
                "INSTANCE_NAME": self.op.instance_name,
                "INSTANCE_PRIMARY": self.pnode.name,
                "INSTANCE_SECONDARIES": "",
                "INSTANCE_OS_TYPE": self.op.os_type,
                "INSTANCE_STATUS": "down",
                "INSTANCE_DISK_TEMPLATE": self.op.disk_template,
                "INSTANCE_HYPERVISOR": self.hv_name,
                "INSTANCE_MINMEM": str(self.be.minmem),
                "INSTANCE_MAXMEM": str(self.be.maxmem),
                "INSTANCE_MEMORY": str(self.be.maxmem),
                "INSTANCE_VCPUS": str(self.be.vcpus),
                "INSTANCE_NIC_COUNT": str(len(self.op.nics)),
                "INSTANCE_DISK_COUNT": str(len(self.op.disks)),
                "INSTANCE_TAGS": " ".join(self.op.tags),
            }
            for i, d in enumerate(self.op.disks):
                env[f"INSTANCE_DISK{i}_SIZE"] = str(d.size)
                env[f"INSTANCE_DISK{i}_MODE"] = d.mode
        env.update({"INSTANCE_ADD_MODE": self.op.mode})
        return env

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.cluster.master_node, self.pnode.uuid]
        return nodes, nodes

    def _disk_path(self, inst: Instance, disk: Disk) -> str:
        cluster = self.cfg.cluster
        base = (
            cluster.shared_file_storage_dir
            if self.op.disk_template == "sharedfile"
            else cluster.file_storage_dir
        )
        return os.path.join(base, inst.uuid, f"{disk.uuid}.img")

    async def _check_node_side(self) -> None:
        """What only the node can tell (bridges, kernel files, binaries), before any change."""
        node = self.target(self.pnode)
        await self.check_bridges(
            self.pnode, needed_bridges(self.cfg, self.hv_name, self.pnode, self.nics)
        )
        res_v = await self.rpc.call(
            node,
            defs.HV_PARAMS_VERIFY,
            t.HvParamsArgs(hypervisor=self.hv_name, hvparams=self.hv_filled),
        )
        res_v.get("validating the hypervisor parameters")

    def _network_port(self) -> int | None:
        """Ganeti allocates a TCP port (VNC) to every KVM instance, from 11000 up."""
        if self.hv_name != "kvm":
            return None
        used = {i.network_port for i in self.cfg.data.instances.values() if i.network_port}
        port = 11000
        while port in used:
            port += 1
        return port

    async def exec(self) -> list[str]:
        op = self.op
        for nic in self.nics:
            if nic.mac in ("auto", "generate"):
                nic.mac = self.cfg.generate_mac(network_checks.nic_mac_prefix(self.cfg.data, nic))
            else:
                self.cfg.reserve_mac(nic.mac)
        inst = Instance(
            name=op.instance_name,
            primary_node=self.pnode.uuid,
            os=op.os_type,
            hypervisor=self.hv_name,
            hvparams=self.hvparams,
            beparams=self.beparams,
            osparams=self.osparams,
            nics=self.nics,
            disk_template=op.disk_template,
            tags=list(op.tags),
            admin_state="down",
            network_port=self._network_port(),
        )
        disks: list[Disk] = []
        for i, d in enumerate(op.disks):
            disk = Disk(
                dev_type=op.disk_template,
                size=d.size,
                mode=d.mode,
                name=d.name,
                iv_name=f"disk/{i}",
                spindles=d.spindles,
            )
            if op.disk_template in ("file", "sharedfile"):
                disk.logical_id = ["loop", self._disk_path(inst, disk)]
            disks.append(disk)
        node = self.target(self.pnode)
        created: list[t.DiskSpec] = []
        # OVN ports first (bound to the primary node): an unreachable NB fails
        # the creation before anything else exists.
        ports = await ovn.sync_ports(self.cfg, inst, self.pnode.name)
        try:
            for i, disk in enumerate(disks):
                self.log_info(f"Creating disk {i} ({disk.size} MiB) on {self.pnode.name}")
                spec = disk_spec(self.cfg, inst, i, disk)
                res = await self.rpc.call(
                    node, defs.BLOCKDEV_CREATE, t.DiskCreateArgs(disk=spec, instance_name=inst.name)
                )
                res.get(f"creating disk {i}")
                created.append(spec)
        except Exception:
            # Only disks this job just created (empty, never given to anyone).
            for spec in created:
                await self.rpc.call(node, defs.BLOCKDEV_REMOVE, t.DiskRemoveArgs(disk=spec))
            await ovn.drop_ports(self.cfg, ports)
            raise
        self.cfg.add_instance(inst, disks)
        await self.cfg.commit()
        self.log_info(f"Instance {inst.name} added to the cluster configuration")
        if op.os_type and not op.no_install:  # on failure, the instance is removed again
            await os_lu.install_new_instance(self, inst, created)
        if op.start:
            inst_copy = self.cfg.copy(self.cfg.data.instances[inst.uuid])
            inst_copy.admin_state = "up"
            inst = self.cfg.update(inst_copy)
            await self.cfg.commit()
            self.log_info(f"Starting instance {inst.name} on node {self.pnode.name}")
            spec_i = instance_spec(self.cfg, inst)
            res_s = await self.rpc.call(
                node, defs.INSTANCE_START, t.InstanceStartArgs(instance=spec_i)
            )
            if res_s.failed:
                # The instance never ran: undo the whole creation (config entry and
                # the disks this job made), so a failed add leaves nothing behind.
                specs = [disk_spec(self.cfg, inst, i, d) for i, d in enumerate(disks)]
                self.cfg.remove_instance(inst.uuid)
                await self.cfg.commit()
                for spec in specs:
                    await self.rpc.call(node, defs.BLOCKDEV_REMOVE, t.DiskRemoveArgs(disk=spec))
                await ovn.drop_ports(self.cfg, ports)
                raise OpExecError(
                    f"instance {inst.name} could not be started, creation undone: {res_s.fail_msg}",
                    res_s.error.code if res_s.error else ECode.ENVIRON,
                )
        return [self.pnode.name]
