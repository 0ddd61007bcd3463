"""``gnt-instance modify`` and ``grow-disk``: change an instance, live where possible.

Layer: logical units. NIC and disk changes of a running KVM instance go
live by default (the cluster's ``hotplug_by_default``): one RPC per device,
``hotplug_device``, after ``hotplug_supported`` said which changes the
instance can take. What cannot go live is refused (``hotplug=True``) or
recorded for the next start with a warning (the default).

Order of config and node changes, so a crash anywhere leaves config,
runtime file and QEMU agreeing — or a drift ``gnt-cluster verify`` names
and a repeated ``modify`` repairs:

* add: the config first (committed), then the hot-add; a failed hot-add
  takes the config change back (and deletes the disk this job created,
  still empty). A crash in between leaves a NIC/disk in the config that is
  not plugged: ``modify --net N:modify`` (``--disk N:modify``), without
  parameters, plugs it.
* remove: the hot-remove first; only when the guest released the device
  is it dropped from the config, and a disk's data is deleted after that.
  A failed unplug changes nothing and deletes nothing.
* modify: the config first, then re-link (or replug if the MAC changed);
  a failure takes the config change back.
"""

from __future__ import annotations

import os
from typing import Any

from corral import hypervisor, objects, params
from corral.errors import CorralError, ECode, OpExecError, OpPrereqError, ParameterError
from corral.lu import devices, network_checks, ovn
from corral.lu.base import register
from corral.lu.common import check_node_online, disk_spec, instance_spec, needed_bridges
from corral.lu.devices import DiskChange, NicChange
from corral.lu.instance import _InstanceLU
from corral.lu.os import merge_osparams, normalize_osparams
from corral.objects import NIC, Disk
from corral.opcodes import OpInstanceGrowDisk, OpInstanceSetParams
from corral.rpc import defs
from corral.rpc import types as t

Change = tuple[str, str]  # (parameter, what happened): Ganeti's modify result
_NIC_ACTIONS = {"add": "hotadd", "remove": "hotremove", "modify": "hotmod"}
# A disk modify changes only the config (mode/name), but on a running instance it
# also plugs the disk if it is not plugged (the repair after a crash).
_DISK_ACTIONS = {"add": "hotadd", "remove": "hotremove", "modify": "hotadd"}


def _merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Overrides with ``changes`` applied; the value ``default`` drops an override."""
    out = dict(current)
    for k, v in changes.items():
        if v == "default":
            out.pop(k, None)
        else:
            out[k] = v
    return out


@register(OpInstanceSetParams)
class LUInstanceSetParams(_InstanceLU):
    HPATH = "instance-modify"

    def check_prereq(self) -> None:
        super().check_prereq()
        op, cfg, inst = self.op, self.cfg, self.inst
        if not (op.nics or op.disks or op.beparams or op.hvparams or op.osparams):
            raise ParameterError("opcode", "no changes requested")
        if op.hotplug is not None and op.hotplug_if_possible:
            raise ParameterError("hotplug", "hotplug and hotplug_if_possible exclude each other")
        group = cfg.node_group(self.pnode)
        self.hvparams = inst.hvparams
        if op.hvparams:
            hvg = hypervisor.params_for(inst.hypervisor)
            self.hvparams = hvg.check_overrides(_merge(inst.hvparams, op.hvparams), "hvparams")
            filled = hvg.fill_dict(
                cfg.cluster.hvparams.get(inst.hypervisor),
                group.hvparams.get(inst.hypervisor),
                self.hvparams,
            )
            hypervisor.hv_class(inst.hypervisor).check_syntax(filled)
        self.beparams = inst.beparams
        if op.beparams:
            self.beparams = params.BE.check_overrides(
                _merge(inst.beparams, op.beparams), "beparams"
            )
            be = params.BE.fill(
                objects.cluster_default(cfg.cluster.beparams), group.beparams, self.beparams
            )
            if be.minmem > be.maxmem:
                raise ParameterError(
                    "beparams/minmem", f"minmem ({be.minmem}) is larger than maxmem ({be.maxmem})"
                )
        self.osparams = inst.osparams
        if op.osparams:
            if not inst.os:
                raise ParameterError("osparams", "the instance has no OS")
            self.osparams = merge_osparams(inst.osparams, normalize_osparams(op.osparams))
        self.nic_changes = devices.plan_nics(cfg, group, list(inst.nics), op.nics)
        self.disk_changes = devices.plan_disks(
            inst.disk_template, cfg.instance_disks(inst), op.disks
        )
        if (self.nic_changes or self.disk_changes) and self.pnode.offline:
            check_node_online(self.pnode, "; NICs and disks cannot be changed")
        # The (parameter, change) pairs of the real result, so the CLI can list them.
        self.dry_run_result: list[Change] = (
            [(f"hv/{k}", str(v)) for k, v in op.hvparams.items()]
            + [(f"be/{k}", str(v)) for k, v in op.beparams.items()]
            + [(f"os/{k}", str(v)) for k, v in op.osparams.items()]
            + [(f"nic.{c.index}", c.action) for c in self.nic_changes]
            + [(f"disk/{c.index}", c.action) for c in self.disk_changes]
        )

    async def check_prereq_nodes(self) -> None:
        op = self.op
        self.live: dict[tuple[str, str], bool] = {}
        self.running = False
        if op.osparams and self.inst.os:
            from corral.lu.os import check_instance_os

            await check_instance_os(self, self.pnode, self.inst.os, self.osparams)
        if not (self.nic_changes or self.disk_changes):
            return
        await self._check_bridges()
        strict = op.hotplug is True
        wanted = (
            op.hotplug
            if op.hotplug is not None
            else (op.hotplug_if_possible or self.cfg.cluster.hotplug_by_default)
        )
        needed: set[tuple[str, str]] = {(_NIC_ACTIONS[c.action], "nic") for c in self.nic_changes}
        needed |= {
            (_DISK_ACTIONS[c.action], "disk")
            for c in self.disk_changes
            if c.action in _DISK_ACTIONS
        }
        limits: dict[tuple[str, str], str] = {}
        res = None
        if wanted:  # one call says both whether it runs and what it can take live
            res = await self.rpc.call(
                self.target(self.pnode),
                defs.HOTPLUG_SUPPORTED,
                t.HotplugSupportedArgs(instance=instance_spec(self.cfg, self.inst)),
            )
        if res is not None and not res.failed:
            assert res.payload is not None
            self.running = res.payload.running
            limits = {(lim.action, lim.dev_type): lim.reason for lim in res.payload.limits}
        else:
            self.running = await self.is_running()
            if res is not None:
                limits = {k: res.fail_msg or "node unreachable" for k in needed}
        if strict and not self.running:
            raise OpPrereqError(
                f"instance {self.inst.name} is not running: nothing to hotplug into "
                "(leave out --hotplug to change the configuration only)",
                ECode.STATE,
            )
        for key in sorted(needed):
            action, kind = key
            if not self.running:
                self.live[key] = False
                continue
            if not wanted:
                self.live[key] = False
            elif key in limits:
                if strict:
                    raise OpPrereqError(
                        f"cannot {action[3:]} a {kind} of {self.inst.name} live: {limits[key]}",
                        ECode.STATE,
                    )
                self.live[key] = False
                if key == ("hotremove", "disk"):
                    continue  # never deferred: refused below, with this reason
                self.log_warning(
                    f"cannot {action[3:]} a {kind} live ({limits[key]}); "
                    "the change takes effect at the next start of the instance"
                )
                self.live[key] = False
            else:
                self.live[key] = True
        if (
            self.running
            and any(c.action == "remove" for c in self.disk_changes)
            and not (self.live.get(("hotremove", "disk")))
        ):
            # The guest would keep writing to a disk whose data we delete.
            why = limits.get(("hotremove", "disk"))
            how = f"live ({why}); stop it first" if why else "without hotplug; stop it first"
            raise OpPrereqError(
                f"cannot remove a disk from the running instance {self.inst.name} {how}"
                + ("" if why else " or allow hotplug"),
                ECode.STATE,
            )

    async def _check_bridges(self) -> None:
        nics = [c.nic for c in self.nic_changes if c.action != "remove"]
        bridges = needed_bridges(self.cfg, self.inst.hypervisor, self.pnode, nics)
        await self.check_bridges(self.pnode, bridges)

    # --- execution -------------------------------------------------------------------

    async def exec(self) -> list[Change]:
        out: list[Change] = []
        inst = self.cfg.copy(self.inst)
        inst.hvparams, inst.beparams, inst.osparams = self.hvparams, self.beparams, self.osparams
        if (
            inst.hvparams != self.inst.hvparams
            or inst.beparams != self.inst.beparams
            or (inst.osparams != self.inst.osparams)
        ):
            self.inst = self.cfg.update(inst)
            await self.cfg.commit()
            out += [(f"hv/{k}", str(v)) for k, v in self.op.hvparams.items()]
            out += [(f"be/{k}", str(v)) for k, v in self.op.beparams.items()]
            out += [(f"os/{k}", str(v)) for k, v in self.op.osparams.items()]
        for nc in self.nic_changes:
            out += await self._apply_nic(nc)
        for dc in self.disk_changes:
            out += await self._apply_disk(dc)
        return out

    def _is_live(self, action: str, kind: str) -> bool:
        return self.live.get((action, kind), False)

    async def _hotplug(
        self, action: t.HotplugAction, device: t.NicSpec | t.DiskSpec, seq: int
    ) -> t.HotplugResult:
        kind: t.HotplugTarget = "nic" if isinstance(device, t.NicSpec) else "disk"
        res = await self.rpc.call(
            self.target(self.pnode),
            defs.HOTPLUG_DEVICE,
            t.HotplugArgs(
                instance=instance_spec(self.cfg, self.inst),
                action=action,
                dev_type=kind,
                device=device,
                seq=seq,
            ),
        )
        if res.failed:
            raise OpExecError(
                f"could not {action[3:]} {kind} {seq} of {self.inst.name} live: {res.fail_msg}",
                res.error.code if res.error else ECode.ENVIRON,
            )
        assert res.payload is not None
        return res.payload

    def _set_nics(self, nics: list[NIC]) -> None:
        inst = self.cfg.copy(self.inst)
        inst.nics = nics
        self.inst = self.cfg.update(inst)

    def _nic_spec(self, index: int) -> t.NicSpec:
        return instance_spec(self.cfg, self.inst).nics[index]

    def _hot_text(self, live: bool, res: t.HotplugResult | None) -> str:
        if not live:
            return "hotplug:deferred" if self.running else "hotplug:not running"
        assert res is not None
        where = f" at {res.slot}" if res.slot else ""
        return f"hotplug:done ({res.device_id}{where}{'; ' + res.detail if res.detail else ''})"

    async def _apply_nic(self, c: NicChange) -> list[Change]:
        name = f"nic.{c.index}"
        group = self.cfg.node_group(self.pnode)
        before = list(self.inst.nics)
        if c.action == "remove":
            live = self._is_live("hotremove", "nic")
            res = None
            if live:
                res = await self._hotplug("hotremove", self._nic_spec(c.index), c.index)
            self._set_nics([n for n in before if n.uuid != c.nic.uuid])
            await self.cfg.commit()
            await self._drop_port(c.nic.uuid)
            return [(name, "remove"), (name, self._hot_text(live, res))]
        if c.action == "modify" and not c.mac_changed and c.old is not None:
            c.nic.mac = c.old.mac  # a NIC added earlier in this job got its MAC only then
        if c.nic.mac in ("auto", "generate"):
            c.nic.mac = self.cfg.generate_mac(network_checks.nic_mac_prefix(self.cfg.data, c.nic))
        elif c.action == "add" or c.mac_changed:
            self.cfg.reserve_mac(c.nic.mac)
        nics = list(before)
        if c.action == "add":
            nics.insert(c.index, c.nic)
        else:
            nics[c.index] = c.nic
        self._set_nics(nics)
        await self.cfg.commit()
        filled = objects.fill_nic(self.cfg.cluster, group, c.nic)
        # OVN: the port exists (bound here) before the tap appears on br-int.
        try:
            await self._sync_port(c.nic, filled.mode)
        except CorralError:
            self._set_nics(before)
            await self.cfg.commit()
            raise
        text = f"{c.action}:{devices.nic_text(c.nic, filled)}"
        action: t.HotplugAction = "hotadd" if c.action == "add" else "hotmod"
        live = self._is_live(action, "nic")
        res = None
        if live:
            if c.mac_changed:
                self.log_warning(
                    f"the MAC of {name} changes: the NIC is unplugged and plugged again at the "
                    "same slot; the guest loses its connection on it for a moment"
                )
            try:
                res = await self._hotplug(action, self._nic_spec(c.index), c.index)
            except OpExecError:
                self._set_nics(before)  # nothing half-done: the config as it was
                await self.cfg.commit()
                old = c.old if c.action == "modify" else None
                if old is not None:
                    await self._sync_port(old, objects.fill_nic(self.cfg.cluster, group, old).mode)
                else:
                    await self._drop_port(c.nic.uuid)
                raise
        return [(name, text), (name, self._hot_text(live, res))]

    async def _sync_port(self, nic: NIC, mode: str) -> None:
        if mode == "ovn":
            await ovn.sync_ports(self.cfg, self.inst, self.pnode.name, [nic])
        else:  # no longer on OVN (mode changed): its old port goes
            await self._drop_port(nic.uuid)

    async def _drop_port(self, nic_uuid: str) -> None:
        try:
            await ovn.drop_ports(self.cfg, [nic_uuid])
        except CorralError as err:
            self.log_warning(
                f"OVN port {nic_uuid} not deleted: {err}", hint="the watcher deletes it later"
            )

    async def _apply_disk(self, c: DiskChange) -> list[Change]:
        name = f"disk/{c.index}"
        node = self.target(self.pnode)
        if c.action == "modify":
            assert c.old is not None
            # On the disk as stored now: an earlier change of this job (its add,
            # another modify, a renumbering) may have updated it since planning.
            stored = self.cfg.copy(self.cfg.data.disks[c.disk.uuid])
            stored.mode, stored.name = c.disk.mode, c.disk.name
            self.cfg.update(stored)
            await self.cfg.commit()
            self.inst = self.cfg.data.instances[self.inst.uuid]
            changed = [
                f"{k}={getattr(c.disk, k)}"
                for k in ("mode", "name")
                if getattr(c.disk, k) != getattr(c.old, k)
            ]
            if self.running and c.disk.mode != c.old.mode:
                self.log_warning(f"the access mode of {name} changes at the next start")
            out = [(name, "modify:" + ",".join(changed))]
            if self._is_live("hotadd", "disk"):
                # Plugs the disk if a crash left it unplugged; a plugged one is left alone.
                spec = disk_spec(self.cfg, self.inst, c.index, stored)  # c.disk may lack a path
                out.append(
                    (name, self._hot_text(True, await self._hotplug("hotadd", spec, c.index)))
                )
            return out
        if c.action == "remove":
            live = self._is_live("hotremove", "disk")
            spec = disk_spec(self.cfg, self.inst, c.index, c.disk)
            res = None
            if live:
                res = await self._hotplug("hotremove", spec, c.index)
            self.inst = self.cfg.remove_instance_disk(self.cfg.copy(self.inst), c.disk.uuid)
            self._renumber_disks()
            await self.cfg.commit()
            # Only now that no config references it: the user asked to delete it.
            r = await self.rpc.call(node, defs.BLOCKDEV_REMOVE, t.DiskRemoveArgs(disk=spec))
            if r.failed:
                self.log_warning(
                    f"the image of the removed disk was left on {self.pnode.name}: {r.fail_msg}"
                )
            return [(name, "remove"), (name, self._hot_text(live, res))]
        disk = c.disk
        if disk.dev_type in ("file", "sharedfile"):
            base = (
                self.cfg.cluster.shared_file_storage_dir
                if disk.dev_type == "sharedfile"
                else self.cfg.cluster.file_storage_dir
            )
            disk.logical_id = ["loop", os.path.join(base, self.inst.uuid, f"{disk.uuid}.img")]
        spec = disk_spec(self.cfg, self.inst, c.index, disk)
        self.log_info(f"Creating disk {c.index} ({disk.size} MiB) on {self.pnode.name}")
        res_c = await self.rpc.call(
            node, defs.BLOCKDEV_CREATE, t.DiskCreateArgs(disk=spec, instance_name=self.inst.name)
        )
        res_c.get(f"creating disk {c.index}")
        self.inst = self.cfg.add_instance_disk(self.cfg.copy(self.inst), disk, c.index)
        self._renumber_disks()
        await self.cfg.commit()
        live = self._is_live("hotadd", "disk")
        res = None
        if live:
            try:
                res = await self._hotplug(
                    "hotadd", disk_spec(self.cfg, self.inst, c.index, disk), c.index
                )
            except OpExecError:
                # Undo: the disk was created by this job and never held data.
                self.inst = self.cfg.remove_instance_disk(self.cfg.copy(self.inst), disk.uuid)
                self._renumber_disks()
                await self.cfg.commit()
                await self.rpc.call(node, defs.BLOCKDEV_REMOVE, t.DiskRemoveArgs(disk=spec))
                raise
        return [
            (
                name,
                f"add:size={disk.size},mode={disk.mode}"
                + (f",name={disk.name}" if disk.name else ""),
            ),
            (name, self._hot_text(live, res)),
        ]

    def _renumber_disks(self) -> None:
        for i, d in enumerate(self.cfg.instance_disks(self.inst)):
            if d.iv_name != f"disk/{i}":
                dc = self.cfg.copy(d)
                dc.iv_name = f"disk/{i}"
                self.cfg.update(dc)


@register(OpInstanceGrowDisk)
class LUInstanceGrowDisk(_InstanceLU):
    HPATH = "disk-grow"

    def check_prereq(self) -> None:
        super().check_prereq()
        disks = self.cfg.instance_disks(self.inst)
        if self.op.disk >= len(disks):
            raise OpPrereqError(
                f"instance {self.inst.name} has no disk {self.op.disk} "
                f"({len(disks)} disk{'' if len(disks) == 1 else 's'})",
                ECode.INVAL,
            )
        self.disk: Disk = disks[self.op.disk]
        if self.disk.dev_type not in ("file", "sharedfile"):
            raise OpPrereqError(f"disks of type {self.disk.dev_type} cannot grow", ECode.INVAL)
        if self.op.absolute:
            if self.op.amount < self.disk.size:
                raise OpPrereqError(
                    f"disk {self.op.disk} is {self.disk.size} MiB, more than the requested "
                    f"{self.op.amount} MiB; disks are never shrunk",
                    ECode.INVAL,
                )
            self.new_size = self.op.amount
        else:
            self.new_size = self.disk.size + self.op.amount
        check_node_online(self.pnode)
        self.dry_run_result = self.new_size

    def build_hooks_env(self) -> dict[str, str]:
        env = super().build_hooks_env()
        env.update(DISK=str(self.op.disk), AMOUNT=str(self.new_size - self.disk.size))
        return env

    async def exec(self) -> int:
        spec = disk_spec(self.cfg, self.inst, self.op.disk, self.disk)
        self.log_info(
            f"Growing disk {self.op.disk} of instance {self.inst.name} "
            f"from {self.disk.size} MiB to {self.new_size} MiB"
        )
        res = await self.rpc.call(
            self.target(self.pnode),
            defs.BLOCKDEV_GROW,
            t.DiskGrowArgs(
                disk=spec,
                new_size=self.new_size,
                # The node tells a running instance itself (no extra round trip here).
                instance=instance_spec(self.cfg, self.inst),
            ),
        )
        grown = res.get(f"growing disk {self.op.disk}")
        disk = self.cfg.copy(self.disk)
        disk.size = grown.size
        self.cfg.update(disk)
        await self.cfg.commit()
        if grown.live:
            self.log_info("The running instance sees the new size now")
        elif self.inst.admin_state == "up":
            self.log_warning("the instance sees the new size only after its next start")
        return grown.size
