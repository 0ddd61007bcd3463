"""Networks: add, remove, modify, connect to and disconnect from node groups.

Layer: logical units. Ganeti's semantics (``cmdlib/network.py``): a network
is an address range with optional gateway, IPv6 range and MAC prefix; it is
*connected* to node groups, each connection carrying the NIC parameters
(mode, link, VLAN) that NICs on the network get in that group. Corral adds
``ovn_switch``: the OVN logical switch that backs the network (NIC mode
``ovn``). Every check runs in ``check_prereq``, so a refused request changes
nothing; OVN is reached only through :meth:`NetworkLU._ovn_sync`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from corral.errors import CorralError, ECode, OpExecError, OpPrereqError, ParameterError
from corral.locking import Level
from corral.lu import network_checks as nc
from corral.lu import ovn
from corral.lu.base import ALL_SET, LogicalUnit, register
from corral.objects import Network, NodeGroup
from corral.opcodes import (
    OpCode,
    OpNetworkAdd,
    OpNetworkConnect,
    OpNetworkDisconnect,
    OpNetworkRemove,
    OpNetworkSetParams,
)

OpT = TypeVar("OpT", bound=OpCode)
GroupOpT = TypeVar("GroupOpT", bound=OpNetworkConnect | OpNetworkDisconnect)


def network_hook_env(net: Network) -> dict[str, str]:
    """Ganeti's ``_BuildNetworkHookEnv`` (only the values that are set), plus the OVN switch."""
    env = {"NETWORK_NAME": net.name}
    for key, value in (
        ("NETWORK_SUBNET", net.network),
        ("NETWORK_GATEWAY", net.gateway),
        ("NETWORK_SUBNET6", net.network6),
        ("NETWORK_GATEWAY6", net.gateway6),
        ("NETWORK_MAC_PREFIX", net.mac_prefix),
        ("NETWORK_TAGS", " ".join(net.tags)),
        ("NETWORK_OVN_SWITCH", net.ovn_switch),
    ):
        if value:
            env[key] = value
    return env


class NetworkLU(LogicalUnit[OpT]):
    HTYPE = "NETWORK"

    def _current(self, uuid: str, name: str) -> Network:
        net = self.cfg.data.networks.get(uuid)
        if net is None:
            raise OpPrereqError(f"network '{name}' was removed", ECode.NOENT)
        return net

    def _current_group(self, uuid: str, name: str) -> NodeGroup:
        group = self.cfg.data.nodegroups.get(uuid)
        if group is None:
            raise OpPrereqError(f"node group '{name}' was removed", ECode.NOENT)
        return group

    def _group_nodes(self, group: NodeGroup) -> list[str]:
        return [n.uuid for n in self.cfg.data.nodes.values() if n.group == group.uuid]

    async def _ovn_sync(self, net: Network, present: bool) -> None:
        """Make OVN agree with ``net``: its logical switch exists (``present``) or not.

        The one place where network operations reach OVN; it runs in ``exec``
        *before* the configuration changes, so a failure here (raise
        :class:`~corral.errors.OpExecError`) leaves the configuration as it was.
        Nothing to do for a network without ``ovn_switch`` or while the cluster
        has no ``ovn_nb`` (OVN off).

        Where the NB client (``corral.network.ovn_nb``) goes: ``present`` →
        create the logical switch ``net.ovn_switch`` unless it exists, with
        ``external_ids:corral-network=<net.uuid>``; not ``present`` → delete it.
        Both idempotent (called again on every connect).
        """
        if not net.ovn_switch or not self.cfg.cluster.ovn_nb:
            return
        switch, uuid = net.ovn_switch, net.uuid
        try:
            if present:
                made = await ovn.nb_call(self.cfg, lambda nb: nb.ensure_switch(switch, uuid))
                if made:
                    self.log_info(f"OVN logical switch {switch} created")
            else:
                gone = await ovn.nb_call(
                    self.cfg, lambda nb: nb.delete_switch(switch, network_uuid=uuid)
                )
                if gone:
                    self.log_info(f"OVN logical switch {switch} deleted")
        except CorralError as err:
            raise OpExecError(
                f"OVN logical switch {switch}: {err}; the configuration is unchanged", err.code
            ) from err


# --- add / remove / modify ---------------------------------------------------------------------


@register(OpNetworkAdd)
class LUNetworkAdd(NetworkLU[OpNetworkAdd]):
    HPATH = "network-add"

    def expand_names(self) -> None:
        if self.cfg.network_by_name(self.op.network_name) is not None:
            raise OpPrereqError(f"network '{self.op.network_name}' already exists", ECode.EXISTS)

    def check_prereq(self) -> None:
        op = self.op
        existing = self.cfg.network_by_name(op.network_name)
        if existing is not None:
            raise OpPrereqError(
                f"network '{op.network_name}' already exists (UUID {existing.uuid})", ECode.EXISTS
            )
        nc.no_reserved_ips(op.add_reserved_ips, "add_reserved_ips")
        network = nc.network4(op.network)
        network6 = nc.network6(op.network6) if op.network6 else None
        if op.ovn_switch:
            for other in self.cfg.data.networks.values():
                if other.ovn_switch == op.ovn_switch:
                    raise OpPrereqError(
                        f"OVN logical switch '{op.ovn_switch}' already backs network "
                        f"'{other.name}'",
                        ECode.NOTUNIQUE,
                    )
        self.net = Network(
            name=op.network_name,
            network=network,
            gateway=nc.gateway(op.gateway, network, "gateway") if op.gateway else None,
            network6=network6,
            gateway6=nc.gateway(op.gateway6, network6, "gateway6") if op.gateway6 else None,
            mac_prefix=nc.mac_prefix(op.mac_prefix) if op.mac_prefix else None,
            ovn_switch=op.ovn_switch,
            tags=sorted(set(op.tags)),
        )

    def build_hooks_env(self) -> dict[str, str]:
        return network_hook_env(self.net)

    async def exec(self) -> None:
        if self.cfg.network_by_name(self.net.name) is not None:  # added meanwhile
            raise OpPrereqError(f"network '{self.net.name}' already exists", ECode.EXISTS)
        if self.net.ovn_switch and not self.cfg.cluster.ovn_nb:
            self.log_warning(
                f"the cluster has no OVN northbound database: logical switch "
                f"'{self.net.ovn_switch}' is not created in OVN",
                "set it with gnt-cluster modify --ovn-nb=tcp:HOST:PORT",
            )
        await self._ovn_sync(self.net, present=True)
        self.cfg.add_network(self.net)


@register(OpNetworkRemove)
class LUNetworkRemove(NetworkLU[OpNetworkRemove]):
    HPATH = "network-remove"

    def expand_names(self) -> None:
        self.uuid = self.cfg.expand_network(self.op.network_name).uuid
        self.needed_locks[Level.NETWORK] = [self.uuid]
        self.needed_locks[Level.NODEGROUP] = ALL_SET
        self.share_locks[Level.NODEGROUP] = True

    def check_prereq(self) -> None:
        self.net = net = self._current(self.uuid, self.op.network_name)
        groups = sorted(g.name for g in self.cfg.data.nodegroups.values() if net.uuid in g.networks)
        if groups:
            raise OpPrereqError(
                f"network '{net.name}' is still connected to node group(s) "
                f"{', '.join(groups)}; disconnect it first (gnt-network disconnect {net.name})",
                ECode.STATE,
            )
        used = nc.nics_in(self.cfg.data.instances.values(), lambda n: n.network == net.uuid)
        if used:
            raise OpPrereqError(
                f"network '{net.name}' is still used by NICs of {nc.format_nics(used)}",
                ECode.STATE,
            )

    def build_hooks_env(self) -> dict[str, str]:
        return network_hook_env(self.net)

    async def exec(self) -> None:
        await self._ovn_sync(self.net, present=False)
        self.cfg.remove_network(self.net.uuid)


@register(OpNetworkSetParams)
class LUNetworkSetParams(NetworkLU[OpNetworkSetParams]):
    HPATH = "network-modify"

    def expand_names(self) -> None:
        self.uuid = self.cfg.expand_network(self.op.network_name).uuid
        self.needed_locks[Level.NETWORK] = [self.uuid]

    def check_prereq(self) -> None:
        op = self.op
        nc.no_reserved_ips(op.add_reserved_ips, "add_reserved_ips")
        nc.no_reserved_ips(op.remove_reserved_ips, "remove_reserved_ips")
        if all(v is None for v in (op.gateway, op.network6, op.gateway6, op.mac_prefix)):
            raise ParameterError("network_name", "nothing to change")
        cur = self._current(self.uuid, op.network_name)
        new = self.cfg.copy(cur)

        def given(value: str | None) -> str | None:
            return None if value is None or value.lower() == nc.NONE else value

        if op.network6 is not None:
            v = given(op.network6)
            new.network6 = nc.network6(v) if v else None
        if op.gateway is not None:
            v = given(op.gateway)
            new.gateway = nc.gateway(v, new.network, "gateway") if v else None
        if op.gateway6 is not None:
            new.gateway6 = given(op.gateway6)
        if new.gateway6 is not None and (op.gateway6 is not None or new.network6 != cur.network6):
            new.gateway6 = nc.gateway(new.gateway6, new.network6, "gateway6")
        if op.mac_prefix is not None:
            v = given(op.mac_prefix)
            new.mac_prefix = nc.mac_prefix(v) if v else None
        if new.network6 != cur.network6:
            outside = nc.nics_in(
                self.cfg.data.instances.values(),
                lambda n: (
                    n.network == cur.uuid
                    and n.ip is not None
                    and ":" in n.ip
                    and not nc.ip_in_network(new, n.ip)
                ),
            )
            if outside:
                raise OpPrereqError(
                    f"IPv6 addresses of NICs on network '{cur.name}' are outside "
                    f"{new.network6 or 'any IPv6 network'}: {nc.format_nics(outside)}",
                    ECode.STATE,
                )
        self.new = new
        self.changes: list[tuple[str, str | None]] = [
            (key, getattr(new, key))
            for key in ("gateway", "network6", "gateway6", "mac_prefix")
            if getattr(new, key) != getattr(cur, key)
        ]

    def build_hooks_env(self) -> dict[str, str]:
        return network_hook_env(self.new)

    async def exec(self) -> list[tuple[str, str | None]]:
        if self.changes:
            self.cfg.update(self.new)
        else:
            self.log_info(f"Network {self.new.name}: nothing changed")
        return self.changes


# --- connect / disconnect ---------------------------------------------------------------------


class _GroupNetworkLU(NetworkLU[GroupOpT]):
    """One network and one node group, the group locked exclusively."""

    NETWORK_SHARED = True

    def expand_names(self) -> None:
        net = self.cfg.expand_network(self.op.network_name)
        group = self.cfg.expand_group(self.op.group_name)
        self.net_uuid, self.group_uuid = net.uuid, group.uuid
        self.needed_locks[Level.NODEGROUP] = [group.uuid]
        self.needed_locks[Level.NETWORK] = [net.uuid]
        self.share_locks[Level.NETWORK] = self.NETWORK_SHARED

    def _load(self) -> tuple[Network, NodeGroup]:
        self.net = self._current(self.net_uuid, self.op.network_name)
        self.group = self._current_group(self.group_uuid, self.op.group_name)
        return self.net, self.group

    def _group_instances(self, group: NodeGroup) -> list[Any]:
        nodes = set(self._group_nodes(group))
        return [i for i in self.cfg.data.instances.values() if i.primary_node in nodes]

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        nodes = self._group_nodes(self.group)
        return nodes, nodes


@register(OpNetworkConnect)
class LUNetworkConnect(_GroupNetworkLU[OpNetworkConnect]):
    """Ganeti's connect; instances are not locked: the conflicts check reads one
    consistent snapshot of the config and is advisory (as Ganeti's warning is)."""

    HPATH = "network-connect"

    def check_prereq(self) -> None:
        op = self.op
        net, group = self._load()
        self.connected = net.uuid in group.networks
        asked = (op.network_mode, op.network_link, op.network_vlan) != (None, None, None)
        if self.connected and not asked:  # Ganeti: a warning, nothing to do
            self.netparams = dict(group.networks[net.uuid])
            return
        self.netparams = nc.connection_params(
            self.cfg.cluster, group, net, op.network_mode, op.network_link, op.network_vlan
        )
        if self.connected:
            cur = group.networks[net.uuid]
            if cur != self.netparams:
                raise OpPrereqError(
                    f"network '{net.name}' is already connected to node group '{group.name}' "
                    f"with {_fmt_params(cur)}; disconnect it first to change that",
                    ECode.STATE,
                )
            return
        conflicts = nc.nics_in(
            self._group_instances(group),
            lambda n: n.network != net.uuid and n.ip is not None and nc.ip_in_network(net, n.ip),
        )
        if conflicts:
            msg = (
                f"IP addresses of network '{net.name}' are used in node group '{group.name}' "
                f"by NICs not on the network: {nc.format_nics(conflicts)}"
            )
            if op.conflicts_check:
                raise OpPrereqError(
                    f"{msg}; change those NICs or connect with --no-conflicts-check", ECode.STATE
                )
            self.log_warning(msg)

    def build_hooks_env(self) -> dict[str, str]:
        env = network_hook_env(self.net)
        env.update(
            {
                "GROUP_NAME": self.group.name,
                "GROUP_NETWORK_MODE": str(self.netparams["mode"]),
                "GROUP_NETWORK_LINK": str(self.netparams["link"]),
                "GROUP_NETWORK_VLAN": str(self.netparams["vlan"]),
            }
        )
        return env

    async def exec(self) -> None:
        if self.connected:
            self.log_warning(
                f"network '{self.net.name}' is already connected to node group "
                f"'{self.group.name}' ({_fmt_params(self.group.networks[self.net.uuid])})"
            )
            return
        await self._ovn_sync(self.net, present=True)
        group = self.cfg.copy(self.group)
        group.networks[self.net.uuid] = dict(self.netparams)
        self.cfg.update(group)
        self.log_info(
            f"Network {self.net.name} connected to node group {group.name} "
            f"({_fmt_params(self.netparams)})"
        )


@register(OpNetworkDisconnect)
class LUNetworkDisconnect(_GroupNetworkLU[OpNetworkDisconnect]):
    """Refused while instances of the group have NICs on the network; the network is
    locked exclusively so no instance can be created on it meanwhile."""

    HPATH = "network-disconnect"
    NETWORK_SHARED = False

    def check_prereq(self) -> None:
        net, group = self._load()
        self.connected = net.uuid in group.networks
        if not self.connected:
            return
        used = nc.nics_in(self._group_instances(group), lambda n: n.network == net.uuid)
        if used:
            raise OpPrereqError(
                f"network '{net.name}' is still used in node group '{group.name}' by "
                f"{nc.format_nics(used)}; remove those NICs or move them to another network "
                "first",
                ECode.STATE,
            )

    def build_hooks_env(self) -> dict[str, str]:
        env = network_hook_env(self.net)
        env["GROUP_NAME"] = self.group.name
        return env

    async def exec(self) -> None:
        if not self.connected:
            self.log_warning(
                f"network '{self.net.name}' is not connected to node group '{self.group.name}'"
            )
            return
        group = self.cfg.copy(self.group)
        del group.networks[self.net.uuid]
        self.cfg.update(group)
        self.log_info(f"Network {self.net.name} disconnected from node group {group.name}")


def _fmt_params(p: dict[str, Any]) -> str:
    return f"mode={p.get('mode', '')},link={p.get('link', '')},vlan={p.get('vlan', '')}"
