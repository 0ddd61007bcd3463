"""Checks of network definitions, connections and NICs on networks.

Layer: logical units (pure: imports ``objects``, ``params``, ``errors``; no RPC,
no config writer). Every check raises a :class:`ParameterError` naming the
field, or an :class:`OpPrereqError` with its code, and returns the value in
its normal form (``198.51.100.0/24``, lower-case MAC prefix).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from corral import objects, params
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.objects import NIC, Instance, Network, NodeGroup

NONE = "none"
"""Ganeti's ``VALUE_NONE``: in ``modify``, clears a value."""

OVN_MODE = "ovn"
OVN_DEFAULT_LINK = "br-int"  # the integration bridge (ovn-conventions)

_MAC_PREFIX_RE = re.compile(r"^[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*$"
)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- a network's own values ------------------------------------------------------------------


def _cidr(text: str, field: str, version: int) -> IpNetwork:
    other = "--network6" if version == 4 else "--network"
    if "/" not in text:
        raise ParameterError(field, f"{text!r} is not in CIDR notation (address/prefix length)")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ParameterError(field, f"{text!r} is not a valid IPv{version} network") from None
    if net.version != version:
        raise ParameterError(
            field, f"{text!r} is an IPv{net.version} network, not IPv{version} (use {other})"
        )
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise ParameterError(field, f"{text!r} has host bits set; the network is {net}")
    return net


def network4(text: str, field: str = "network") -> str:
    """An IPv4 network in CIDR notation, host bits clear."""
    return str(_cidr(text, field, 4))


def network6(text: str, field: str = "network6") -> str:
    return str(_cidr(text, field, 6))


def gateway(text: str, network: str | None, field: str) -> str:
    """A gateway address inside ``network`` (and not its network or broadcast address)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ParameterError(field, f"{text!r} is not a valid IP address") from None
    if network is None:
        raise ParameterError(field, f"gateway {addr} given without its network")
    net = ipaddress.ip_network(network)
    if addr.version != net.version or addr not in net:
        raise ParameterError(field, f"gateway {addr} is outside the network {net}")
    if isinstance(net, ipaddress.IPv4Network) and net.prefixlen < 31:
        if addr == net.network_address:
            raise ParameterError(field, f"gateway {addr} is the network address of {net}")
        if addr == net.broadcast_address:
            raise ParameterError(field, f"gateway {addr} is the broadcast address of {net}")
    return str(addr)


def mac_prefix(text: str, field: str = "mac_prefix") -> str:
    """Three octets ``aa:bb:cc`` (lower-cased), not a multicast prefix."""
    low = text.strip().lower()
    if not _MAC_PREFIX_RE.match(low):
        raise ParameterError(field, f"{text!r} is not a MAC prefix (three octets: aa:00:00)")
    if int(low[:2], 16) & 1:
        raise ParameterError(field, f"{low} is a multicast prefix; MACs made from it are invalid")
    return low


def no_reserved_ips(values: list[str] | None, field: str) -> None:
    if values:
        raise ParameterError(
            field, "Corral keeps no IP address pool per network; there is nothing to reserve"
        )


def ovn_nb_remote(text: str, field: str = "ovn_nb") -> str:
    """An OVSDB client remote (``tcp:HOST:PORT``, ``ssl:HOST:PORT``, ``unix:PATH``), or
    several separated by commas (a clustered database); ``""`` = no OVN."""
    text = text.strip()
    if not text:
        return ""
    for part in text.split(","):
        _one_remote(part.strip(), field)
    return ",".join(p.strip() for p in text.split(","))


def _one_remote(part: str, field: str) -> None:
    expected = "expected tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH"
    kind, sep, rest = part.partition(":")
    if not sep:
        raise ParameterError(field, f"{part!r}: {expected}")
    if kind == "unix":
        if not rest.startswith("/") or any(c.isspace() for c in rest):
            raise ParameterError(field, f"{part!r}: the socket path must be absolute")
        return
    if kind not in ("tcp", "ssl"):
        raise ParameterError(field, f"{part!r}: unknown connection method {kind!r}; {expected}")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ParameterError(field, f"{part!r}: {expected}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ParameterError(field, f"{part!r}: invalid port {port!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParameterError(field, f"{part!r}: invalid IPv6 address {host}") from None
        return
    if ":" in host:
        raise ParameterError(field, f"{part!r}: write an IPv6 address in brackets, [{host}]")
    if not _HOSTNAME_RE.match(host):
        raise ParameterError(field, f"{part!r}: invalid host {host!r}")


# --- connections ---------------------------------------------------------------------------


def connection_params(
    cluster: objects.Cluster,
    group: NodeGroup,
    net: Network,
    mode: str | None,
    link: str | None,
    vlan: str | None,
) -> dict[str, Any]:
    """The NIC parameters of ``net``'s connection to ``group`` (what its NICs get there).

    Not given: an OVN network gets mode ``ovn`` on ``br-int``; any other the
    group's default mode and, for that mode, its default link and VLAN.
    """
    defaults = params.NIC.fill(objects.cluster_default(cluster.nicparams), group.nicparams)
    mode = mode if mode is not None else (OVN_MODE if net.ovn_switch else defaults.mode)
    params.NIC.check_overrides({"mode": mode}, "nicparams")  # a bad mode first, then defaults
    if link is None:
        if mode == OVN_MODE:
            link = OVN_DEFAULT_LINK
        elif mode == defaults.mode:
            link = defaults.link
        else:
            raise ParameterError(
                "nicparams/link",
                f"give the link for mode {mode} (the default link {defaults.link!r} "
                f"is for mode {defaults.mode})",
            )
    if vlan is None:
        vlan = defaults.vlan if mode == defaults.mode else ""
    checked = params.NIC.check_overrides({"mode": mode, "link": link, "vlan": vlan}, "nicparams")
    if net.ovn_switch and checked["mode"] != OVN_MODE:
        raise ParameterError(
            "nicparams/mode",
            f"network '{net.name}' is backed by the OVN logical switch '{net.ovn_switch}'; "
            f"connect it with mode {OVN_MODE}",
        )
    check_ovn_mode(checked["mode"], net, "nicparams/mode")
    return checked


def check_ovn_mode(mode: str, net: Network | None, field: str) -> None:
    """Mode ``ovn`` is only for NICs on a network backed by an OVN logical switch."""
    if mode != OVN_MODE:
        return
    if net is None:
        raise ParameterError(
            field, "NIC mode ovn needs a network backed by an OVN logical switch (network=NAME)"
        )
    if not net.ovn_switch:
        raise ParameterError(
            field,
            f"network '{net.name}' has no OVN logical switch; mode ovn needs one "
            "(gnt-network add --ovn-switch=NAME or --ovn)",
        )


def ip_in_network(net: Network, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    subnet = net.network if addr.version == 4 else net.network6
    return subnet is not None and addr in ipaddress.ip_network(subnet)


def nics_in(instances: Iterable[Instance], match: Any) -> list[tuple[str, list[tuple[int, NIC]]]]:
    """``[(instance name, [(index, nic), …]), …]`` of the NICs ``match(nic)`` picks."""
    out = []
    for inst in sorted(instances, key=lambda i: i.name):
        hits = [(i, n) for i, n in enumerate(inst.nics) if match(n)]
        if hits:
            out.append((inst.name, hits))
    return out


def format_nics(found: list[tuple[str, list[tuple[int, NIC]]]]) -> str:
    """``inst1 (nic0/198.51.100.10), inst2 (nic1)`` — Ganeti's ``nicN/IP``."""
    return ", ".join(
        f"{name} ({', '.join(f'nic{i}/{n.ip}' if n.ip else f'nic{i}' for i, n in hits)})"
        for name, hits in found
    )


# --- NICs on networks ----------------------------------------------------------------------


def nic_network_params(
    group: NodeGroup, net: Network, given: dict[str, Any], field: str
) -> dict[str, Any]:
    """A NIC on ``net`` takes mode/link/VLAN from the network's connection to ``group``.

    Giving them as well is refused (Ganeti: "If network is given, no mode or
    link is allowed to be passed"), so the NIC never silently loses them.
    """
    clash = sorted(k for k in ("mode", "link", "vlan") if given.get(k) is not None)
    if clash:
        raise ParameterError(
            field,
            f"{', '.join(clash)} cannot be given with network '{net.name}': "
            "a NIC on a network gets mode, link and vlan from the network's connection to "
            "its node group",
        )
    netparams = group.networks.get(net.uuid)
    if netparams is None:
        raise OpPrereqError(
            f"{field}: network '{net.name}' is not connected to node group '{group.name}' "
            f"(gnt-network connect {net.name} {group.name})",
            ECode.INVAL,
        )
    return dict(netparams)


def nic_mac_prefix(data: objects.ConfigData, nic: NIC) -> str | None:
    """The MAC prefix of the NIC's network, if it has one (Ganeti's ``GenerateMAC(net)``)."""
    net = data.networks.get(nic.network) if nic.network else None
    return net.mac_prefix if net else None


def check_nic_ip(net: Network | None, ip: str | None, field: str) -> None:
    """The IP of a NIC on a network lies in that network (or its IPv6 network)."""
    if net is None or not ip or ip in ("pool", NONE):
        return
    if not ip_in_network(net, ip):
        where = " or ".join(n for n in (net.network, net.network6) if n)
        raise ParameterError(f"{field}.ip", f"{ip} is not in network '{net.name}' ({where})")
