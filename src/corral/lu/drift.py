"""Differences between an instance's configuration and what its hypervisor really runs.

Layer: logical units, pure. The node reports the devices its runtime file
records (and which devices QEMU has that the file lacks, or lacks that the
file has); these functions name every difference, so ``gnt-instance info``
can show changes pending until the next start and ``gnt-cluster verify``
can report drift after a crash, each with how to resolve it.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral import objects
from corral.config.writer import ConfigWriter
from corral.objects import Instance
from corral.rpc.types import InstanceRuntime


@dataclass(frozen=True)
class Drift:
    """One difference; ``pending`` ones are expected after a deferred (not live) change."""

    message: str
    pending: bool = True


def instance_drift(cfg: ConfigWriter, inst: Instance, rt: InstanceRuntime) -> list[Drift]:
    out: list[Drift] = []
    group = cfg.node_group(cfg.data.nodes[inst.primary_node])
    if rt.nics is not None:
        running = {n.uuid: n for n in rt.nics}
        for i, nic in enumerate(inst.nics):
            r = running.pop(nic.uuid, None)
            if r is None:
                out.append(
                    Drift(
                        f"nic/{i} ({nic.mac}) is configured but not plugged in "
                        f"(hot-add it: gnt-instance modify --net {i}:modify)"
                    )
                )
                continue
            p = objects.fill_nic(cfg.cluster, group, nic)
            diffs = [
                f"{k} {want or '-'} (running: {have or '-'})"
                for k, want, have in (
                    ("mac", nic.mac, r.mac),
                    ("ip", nic.ip, r.ip),
                    ("mode", p.mode, r.mode),
                    ("link", p.link, r.link),
                    ("vlan", p.vlan, r.vlan),
                )
                if (want or "") != (have or "")
            ]
            if diffs:
                out.append(
                    Drift(
                        f"nic/{i} is configured with {', '.join(diffs)} "
                        f"(apply it: gnt-instance modify --net {i}:modify)"
                    )
                )
        for r in running.values():
            out.append(
                Drift(
                    f"a NIC no longer configured is still plugged in ({r.mac}, device "
                    f"{r.device_id}); it goes at the next full restart"
                )
            )
    if rt.disks is not None:
        running_d = {d.uuid: d for d in rt.disks}
        for i, disk in enumerate(cfg.instance_disks(inst)):
            rd = running_d.pop(disk.uuid, None)
            if rd is None:
                out.append(
                    Drift(
                        f"disk/{i} is configured but not plugged in "
                        f"(hot-add it: gnt-instance modify --disk {i}:modify)"
                    )
                )
            elif rd.size != disk.size:
                out.append(
                    Drift(f"disk/{i} is {disk.size} MiB in the config, {rd.size} MiB running")
                )
        for rd in running_d.values():
            out.append(
                Drift(
                    f"a disk no longer configured is still plugged in (device {rd.device_id}, "
                    f"{rd.path}); it goes at the next full restart"
                )
            )
    for dev in rt.unrecorded_devices:
        out.append(
            Drift(f"QEMU has device {dev}, which the node's runtime file does not list", False)
        )
    for dev in rt.lost_devices:
        out.append(
            Drift(f"the node's runtime file lists device {dev}, which QEMU does not have", False)
        )
    return out
