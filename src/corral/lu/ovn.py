"""OVN logical switch ports of instances' NICs: Corral as the OVN CMS.

Layer: logical units (master side). A NIC in mode ``ovn`` sits on a Corral
network backed by an OVN logical switch (``Network.ovn_switch``); its port
is named by the NIC's UUID and bound, through ``options:requested-chassis``,
to the chassis of the instance's primary node (chassis name = node name).
The node side (tap on ``br-int`` with ``external_ids:iface-id``) is the
node's ``kvm-ifup``; this module only speaks to the northbound database.

Live migration follows the seed's workflow (FORMATS.md §A3): before the
memory copy the port is requested on *both* chassis with
``activation-strategy=rarp`` (the destination binds it blocked, and QEMU's
RARP at the switch-over unblocks it — no two chassis fight over it); on
success it is narrowed to the destination and the options cleared; on
failure it goes back to the source. Every step is idempotent and states the
whole desired binding, so a repeat after a crash (``migrate --cleanup``,
the watcher) converges on one chassis.

The NB client is blocking (ovsdbapp runs its own thread): calls go through
:func:`asyncio.to_thread`, one cached client per NB address.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from corral import objects
from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError
from corral.objects import NIC, Instance

if TYPE_CHECKING:
    from corral.network.ovn_nb import NbClient, PortSpec

T = TypeVar("T")

CORRAL_INSTANCE_KEY = "corral-instance"


@dataclass(frozen=True)
class OvnNic:
    """One NIC of an instance that lives on an OVN logical switch."""

    nic: NIC
    switch: str
    network_uuid: str


def ovn_nics(cfg: ConfigWriter, inst: Instance, nics: Iterable[NIC] | None = None) -> list[OvnNic]:
    """The NICs of ``inst`` (or just ``nics``) in mode ``ovn``, with their switch."""
    group = cfg.node_group(cfg.data.nodes[inst.primary_node])
    out = []
    for nic in inst.nics if nics is None else nics:
        if objects.fill_nic(cfg.cluster, group, nic).mode != "ovn":
            continue
        out.append(check_ovn_nic(cfg, nic))
    return out


def check_ovn_nic(cfg: ConfigWriter, nic: NIC) -> OvnNic:
    """``nic`` (mode ``ovn``) as an :class:`OvnNic`; why not, as a prerequisite error."""
    label = nic.name or nic.uuid
    net = cfg.data.networks.get(nic.network) if nic.network else None
    switch = getattr(net, "ovn_switch", None) if net is not None else None
    if net is None or not switch:
        raise OpPrereqError(
            f"NIC {label} is in mode ovn but "
            + (
                f"network {net.name} has no OVN logical switch (gnt-network add --ovn-switch)"
                if net is not None
                else "is on no network (an OVN NIC needs network=<a network with an OVN switch>)"
            ),
            ECode.INVAL,
        )
    if not cfg.cluster.ovn_nb:
        raise OpPrereqError(
            f"NIC {label} is in mode ovn but the cluster has no OVN northbound database "
            "(gnt-cluster modify --ovn-nb=tcp:HOST:6641)",
            ECode.ENVIRON,
        )
    return OvnNic(nic=nic, switch=switch, network_uuid=net.uuid)


# --- the NB client ----------------------------------------------------------------

_clients: dict[str, NbClient] = {}
_clients_lock = threading.Lock()


def _client(remote: str) -> NbClient:
    from corral.network.ovn_nb import NbClient  # ovsdbapp: only where OVN is used

    with _clients_lock:
        c = _clients.get(remote)
        if c is None:
            c = _clients[remote] = NbClient(remote)
        return c


async def nb_call(cfg: ConfigWriter, fn: Callable[[NbClient], T]) -> T:
    """Run ``fn`` with the cluster's NB client, in a thread (ovsdbapp blocks)."""
    remote = cfg.cluster.ovn_nb

    def call() -> T:
        return fn(_client(remote))

    return await asyncio.to_thread(call)


def port_spec(inst: Instance, o: OvnNic, chassis: str) -> PortSpec:
    from corral.network.ovn_nb import PortSpec

    return PortSpec(
        name=o.nic.uuid, mac=o.nic.mac, ip=o.nic.ip, instance=inst.name, chassis=chassis
    )


# --- what LUs call ----------------------------------------------------------------


async def sync_ports(
    cfg: ConfigWriter, inst: Instance, chassis: str, nics: Iterable[NIC] | None = None
) -> list[str]:
    """Create or update the ports of ``inst``'s OVN NICs, bound to ``chassis`` alone.

    Idempotent; also ends a half-done migration's two-chassis binding.
    Returns the names of the ports it handled.
    """
    todo = ovn_nics(cfg, inst, nics)
    if not todo:
        return []

    def run(nb: NbClient) -> list[str]:
        for o in todo:
            nb.ensure_switch(o.switch, o.network_uuid)
            nb.ensure_port(o.switch, port_spec(inst, o, chassis))
        return [o.nic.uuid for o in todo]

    return await nb_call(cfg, run)


async def drop_ports(cfg: ConfigWriter, nic_uuids: Iterable[str]) -> None:
    """Delete the ports of NICs that left the configuration (idempotent)."""
    names = list(nic_uuids)
    if not names or not cfg.cluster.ovn_nb:
        return

    def run(nb: NbClient) -> None:
        for n in names:
            nb.delete_port(n)

    await nb_call(cfg, run)


async def begin_migration(cfg: ConfigWriter, inst: Instance, src: str, dst: str) -> list[str]:
    """Request every OVN port of ``inst`` on ``src`` and ``dst`` (dst blocked until RARP)."""
    todo = ovn_nics(cfg, inst)
    if not todo:
        return []

    def run(nb: NbClient) -> list[str]:
        for o in todo:
            # The port exists and is bound to src first (a port created by an
            # older job or by hand is brought in line before it is widened).
            nb.ensure_switch(o.switch, o.network_uuid)
            nb.ensure_port(o.switch, port_spec(inst, o, src))
            nb.begin_migration(o.nic.uuid, src, dst)
        return [o.nic.uuid for o in todo]

    return await nb_call(cfg, run)


async def finish_migration(cfg: ConfigWriter, inst: Instance, dst: str) -> None:
    """Narrow the ports to ``dst`` and drop the migration options."""
    await _each_port(cfg, inst, lambda nb, port: nb.finish_migration(port, dst))


async def revert_migration(cfg: ConfigWriter, inst: Instance, src: str) -> None:
    """Back to ``src`` alone (the migration failed or was cancelled)."""
    await _each_port(cfg, inst, lambda nb, port: nb.revert_migration(port, src))


async def _each_port(
    cfg: ConfigWriter, inst: Instance, step: Callable[[NbClient, str], None]
) -> None:
    todo = ovn_nics(cfg, inst)

    def run(nb: NbClient) -> None:
        for o in todo:
            step(nb, o.nic.uuid)

    if todo:
        await nb_call(cfg, run)


@dataclass(frozen=True)
class PortProblem:
    """What ``gnt-cluster verify`` says about one OVN port."""

    instance: str  # "" for a port of no instance
    message: str
    error: bool  # False: a warning (e.g. a migration may be in progress)


async def port_problems(cfg: ConfigWriter, running_on: dict[str, str]) -> list[PortProblem]:
    """The OVN ports that don't match the config; ``running_on``: instance -> node name."""
    wanted: dict[str, tuple[Instance, str]] = {}
    problems: list[PortProblem] = []
    for inst in cfg.data.instances.values():
        try:
            nics = ovn_nics(cfg, inst)
        except OpPrereqError as err:
            problems.append(PortProblem(inst.name, err.message, True))
            continue
        node = running_on.get(inst.name) or cfg.data.nodes[inst.primary_node].name
        for o in nics:
            wanted[o.nic.uuid] = (inst, node)

    def run(nb: NbClient) -> None:
        ours = {p.name: p for p in nb.ports_with_key(CORRAL_INSTANCE_KEY)}
        for uuid, (inst, node) in sorted(wanted.items()):
            p = ours.get(uuid) or nb.get_port(uuid)
            if p is None:
                problems.append(
                    PortProblem(
                        inst.name,
                        f"NIC {uuid} has no OVN port (the next start or the watcher makes it)",
                        True,
                    )
                )
            elif p.migrating or p.activation_strategy:
                problems.append(
                    PortProblem(
                        inst.name,
                        f"OVN port {uuid} is requested on {','.join(p.requested_chassis)} "
                        "(a migration in progress, or an interrupted one: "
                        f"gnt-instance migrate --cleanup {inst.name})",
                        False,
                    )
                )
            elif p.requested_chassis != (node,):
                problems.append(
                    PortProblem(
                        inst.name,
                        f"OVN port {uuid} is bound to {','.join(p.requested_chassis) or 'any'}"
                        f" but the instance belongs on {node} (the watcher rebinds it)",
                        True,
                    )
                )
        configured = {n.uuid for i in cfg.data.instances.values() for n in i.nics}
        for name, p in sorted(ours.items()):
            if name not in configured:
                problems.append(
                    PortProblem(
                        "",
                        f"OVN port {name} (of {p.instance}) belongs to no NIC "
                        "(the watcher deletes it)",
                        False,
                    )
                )

    await nb_call(cfg, run)
    return problems
