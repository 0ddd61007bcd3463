"""Wire a tap into the node's network over netlink (bridged and routed NICs).

Layer: driver (imports ``corral.errors``, ``corral.network.nicenv``; pyroute2
and ``corral.network.brioctl`` lazily). Everything acts in the caller's current
network namespace through ``pyroute2.IPRoute``, except bridged NICs without
VLAN, which :mod:`corral.network.brioctl` wires with the standard library
alone (``kvm-ifup`` start-up time); nothing parses ``ip`` output or shells
out. Sysctls are written under ``/proc/sys``, which always shows the writer's
namespace.

What each mode does (the built-in ``kvm-ifup``/``kvm-ifdown``):

* bridged up: ``LINK`` must be an existing bridge. The tap gets an ``fe:…``
  MAC (a Linux bridge without a pinned MAC takes its lowest port MAC; the
  high first octet keeps taps out of that choice), the bridge's MTU (set
  *before* enslaving, else a smaller tap MTU would lower the bridge's), is
  enslaved and brought up. With ``VLAN`` the bridge must already have
  ``vlan_filtering=1`` (we never flip it: that would change forwarding for
  every port of a live bridge); the tap keeps only the VLANs asked for, and
  non-tap ports of the bridge (its uplinks) get the missing VIDs as tagged
  members, as Ganeti's ``net-common`` does. The bridge device is not touched.
* bridged down (:func:`corral.network.ifup.bridged_fast`, no pyroute2): a
  tap that still exists and is a port of ``LINK`` is taken off the bridge and
  brought down (a NIC re-linked while running: ``kvm-ifdown`` of the old
  wiring, then ``kvm-ifup`` of the new). Usually QEMU has exited, the tap is
  gone, and the kernel dropped the port with it: nothing to do.
* routed up: ``LINK`` names the routing table (empty: ``main`` without a
  rule, as in Ganeti). Stale ``iif <tap>`` rules are removed, then
  ``iif <tap> lookup <table>`` is added once, ``<IP>/32`` (``/128``) is
  routed to the tap in that table with ``proto static``, ``proxy_arp`` and
  ``forwarding`` (``proxy_ndp`` for IPv6) are enabled on the tap, tap up.
* routed down: deletes the route (only if it still points at the tap) and the
  rule, looked up by value so it also works when the tap is gone; a rule is
  kept if the tap (renamed-reused) still carries other routes in the table.
  A tap that still exists and carries no other route there gets
  ``proxy_arp``, ``forwarding`` (and ``proxy_ndp``) back to 0.

Both downs leave a tap that still exists alone when another NIC's tap file
names it (``claimed``, see :func:`corral.network.ifup.claimed_elsewhere`):
the kernel reuses ``tapN`` names, and ``kvm-ifdown`` runs after QEMU exited,
when the name may already serve another instance, whose ``kvm-ifup``
replaced stale rules. A tap that no longer exists serves nobody: its rule is
removed whatever the records say (a stale record of a dead instance must not
keep a rule alive).

Failures raise :class:`HypervisorError`; a failing ``up`` undoes what it did.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import ECode, HypervisorError
from corral.network.nicenv import NicEnv, VlanPlan, parse_vlan

RT_TABLES_FILES: tuple[Path, ...] = (
    Path("/etc/iproute2/rt_tables"),
    Path("/etc/iproute2/rt_tables.d"),
    Path("/usr/share/iproute2/rt_tables"),
    Path("/usr/share/iproute2/rt_tables.d"),
)
TABLE_MAIN = 254
_BUILTIN_TABLES = {"main": 254, "default": 253}
_RESERVED_TABLES = {0: "unspec", 255: "local"}
RULE_PRIORITY = 32000  # before the main table's rule (32766)
RTPROT_KERNEL = 2
RTPROT_STATIC = 4
RT_SCOPE_LINK = 253
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
SYSCTL_ROOT = Path("/proc/sys/net")


@dataclass
class SetupResult:
    """What a setup did that the caller may want to log."""

    warnings: list[str] = field(default_factory=list)


# --- netlink plumbing --------------------------------------------------------------


@contextmanager
def _iproute() -> Iterator[Any]:
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    with IPRoute() as ipr:
        yield ipr


@contextmanager
def _netlink(what: str) -> Iterator[None]:
    """Translate pyroute2's errors into :class:`HypervisorError` naming the step."""
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    try:
        yield
    except NetlinkError as e:
        raise HypervisorError(f"{what}: {os.strerror(e.code)}", ECode.ENVIRON) from e


def _find_link(ipr: Any, name: str) -> Any | None:
    with _netlink(f"Cannot look up link {name}"):
        indexes = ipr.link_lookup(ifname=name)
        return ipr.get_links(indexes[0])[0] if indexes else None


def _kind(link: Any) -> str:
    info = link.get("IFLA_LINKINFO")
    return str(info.get("IFLA_INFO_KIND") or "") if info is not None else ""


def _require_tap(ipr: Any, name: str) -> Any:
    link = _find_link(ipr, name)
    if link is None:
        raise HypervisorError(f"Interface {name} does not exist", ECode.ENVIRON)
    return link


def _require_bridge(ipr: Any, name: str) -> Any:
    link = _find_link(ipr, name)
    if link is None:
        raise HypervisorError(f"Bridge {name} does not exist on this node", ECode.ENVIRON)
    kind = _kind(link)
    if kind != "bridge":
        raise HypervisorError(
            f"Link {name} is not a bridge (it is a {kind or 'plain'} device)", ECode.ENVIRON
        )
    return link


def _vlan_filtering(bridge: Any) -> bool:
    data = bridge.get("IFLA_LINKINFO").get("IFLA_INFO_DATA")
    return bool(data is not None and data.get("IFLA_BR_VLAN_FILTERING"))


def _sysctl(path: str, value: str) -> None:
    p = SYSCTL_ROOT / path
    try:
        p.write_text(value)
    except OSError as e:
        raise HypervisorError(f"Cannot set {p}: {e.strerror}", ECode.ENVIRON) from e


# --- helpers for validation (master-side/node-side checks) ------------------------


def bridge_exists(name: str) -> bool:
    """Whether ``name`` is a bridge in this network namespace."""
    from corral.network.brioctl import is_bridge

    return is_bridge(name)


def _table_names(files: Sequence[Path]) -> dict[str, int]:
    names: dict[str, int] = {}
    paths: list[Path] = []
    for f in files:
        if f.is_dir():
            paths.extend(sorted(f.glob("*.conf")))
        else:
            paths.append(f)
    for p in paths:
        try:
            text = p.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0].isdigit():
                names.setdefault(words[1], int(words[0], 10))
    return names


def resolve_table(link: str, *, files: Sequence[Path] = RT_TABLES_FILES) -> int:
    """The routing table a routed NIC's ``link`` names.

    ``link`` is a table number, ``main``/``default``, or a name from
    ``rt_tables`` (``/etc/iproute2`` then ``/usr/share/iproute2``, with their
    ``rt_tables.d/*.conf``). Empty means ``main``. Raises
    :class:`HypervisorError` (``ENVIRON``) for unknown names and for the
    tables no NIC may use (``unspec``, ``local``).
    """
    if not link or link in _BUILTIN_TABLES:
        return _BUILTIN_TABLES.get(link, TABLE_MAIN)
    if link.isdigit():
        table = int(link, 10)
    else:
        table = _table_names(files).get(link, -1)
        if table < 0:
            raise HypervisorError(
                f"Unknown routing table {link!r}: not a number, 'main', or a name in {files[0]}",
                ECode.ENVIRON,
            )
    if table in _RESERVED_TABLES or table > 0xFFFFFFFF:
        what = _RESERVED_TABLES.get(table, "out of range")
        raise HypervisorError(f"Routing table {link!r} ({what}) cannot hold NIC routes")
    return table


# --- bridged ----------------------------------------------------------------------


def _fe_mac(mac: str) -> str:
    return "fe" + mac[2:]


def _port_vlans(ipr: Any, index: int) -> dict[int, int]:
    """VLAN id → flags of one bridge port (``bridge vlan show dev …``)."""
    result: dict[int, int] = {}
    with _netlink("Cannot read bridge VLANs"):
        for msg in ipr.get_vlans(index=index):
            spec = msg.get("IFLA_AF_SPEC")
            if spec is None:
                continue
            for info in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO"):
                result[int(info["vid"])] = int(info["flags"])
    return result


def _apply_vlans(ipr: Any, tap: Any, bridge: Any, plan: VlanPlan, result: SetupResult) -> None:
    tap_idx, br_idx = tap["index"], bridge["index"]
    name = tap.get("IFLA_IFNAME")
    # Add first, then drop what was not asked for (the bridge's default_pvid,
    # normally VLAN 1): the port is never briefly in no VLAN at all.
    with _netlink(f"Cannot set VLANs {plan.vids} on {name}"):
        if plan.untagged is not None:
            ipr.vlan_filter("add", index=tap_idx, vlan_info={"vid": plan.untagged, "pvid": True})
        for vid in plan.tagged:
            ipr.vlan_filter("add", index=tap_idx, vlan_info={"vid": vid})
        for vid in _port_vlans(ipr, tap_idx):
            if vid not in plan.vids:
                ipr.vlan_filter("del", index=tap_idx, vlan_info={"vid": vid})
    # Uplinks (ports that are not taps) must carry the VLANs too, or the
    # instance only reaches its neighbours on this node. Only missing VIDs are
    # added: re-adding a present one would rewrite its pvid/untagged flags.
    with _netlink("Cannot list bridge ports"):
        ports = [link for link in ipr.get_links() if link.get("IFLA_MASTER") == br_idx]
    for port in ports:
        if port["index"] == tap_idx or _kind(port) == "tun":
            continue
        missing = [v for v in plan.vids if v not in _port_vlans(ipr, port["index"])]
        for vid in missing:
            try:
                with _netlink(f"Cannot add VLAN {vid} to uplink {port.get('IFLA_IFNAME')}"):
                    ipr.vlan_filter("add", index=port["index"], vlan_info={"vid": vid})
            except HypervisorError as e:
                result.warnings.append(str(e))


def bridged_up(nic: NicEnv) -> SetupResult:
    result = SetupResult()
    if not nic.link:
        raise HypervisorError(
            f"Bridged NIC {nic.interface} has no bridge (LINK is empty)", ECode.INVAL
        )
    plan = parse_vlan(nic.vlan)
    if plan is None:
        # The common case, without pyroute2: importing it costs more than the
        # whole wiring, once per NIC on every start and hot-plug.
        from corral.network.brioctl import enslave

        enslave(nic.interface, nic.link)
        return result
    with _iproute() as ipr:
        bridge = _require_bridge(ipr, nic.link)
        tap = _require_tap(ipr, nic.interface)
        if plan is not None and not _vlan_filtering(bridge):
            raise HypervisorError(
                f"Instance {nic.instance} NIC {nic.index} asks for VLAN {nic.vlan!r}, but "
                f"bridge {nic.link} has VLAN filtering disabled (enable it with "
                f"'ip link set dev {nic.link} type bridge vlan_filtering 1'; the kernel "
                "needs CONFIG_BRIDGE_VLAN_FILTERING)",
                ECode.ENVIRON,
            )
        idx = tap["index"]
        with _netlink(f"Cannot set MAC/MTU of {nic.interface}"):
            ipr.link(
                "set",
                index=idx,
                address=_fe_mac(tap.get("IFLA_ADDRESS")),
                mtu=bridge.get("IFLA_MTU"),
            )
        try:
            with _netlink(f"Cannot add {nic.interface} to bridge {nic.link}"):
                ipr.link("set", index=idx, master=bridge["index"])
            if plan is not None:
                _apply_vlans(ipr, tap, bridge, plan, result)
            with _netlink(f"Cannot bring {nic.interface} up"):
                ipr.link("set", index=idx, state="up")
        except BaseException:
            # Leave the tap as it came: not a port of any bridge, down.
            try:
                ipr.link("set", index=idx, master=0, state="down")
            except Exception:
                pass
            raise
    return result


# --- routed -----------------------------------------------------------------------


def _routed_address(nic: NicEnv) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not nic.ip:
        raise HypervisorError(
            f"Routed NIC {nic.interface} has no IP address (IP is mandatory in routed mode)",
            ECode.INVAL,
        )
    try:
        return ipaddress.ip_address(nic.ip)
    except ValueError as e:
        raise HypervisorError(
            f"Routed NIC {nic.interface}: invalid IP {nic.ip!r}", ECode.INVAL
        ) from e


def _rule_table(rule: Any) -> int:
    return int(rule.get("FRA_TABLE") or rule["table"])


def _iif_rules(ipr: Any, iif: str) -> list[Any]:
    with _netlink("Cannot list routing rules"):
        return [
            r
            for fam in (socket.AF_INET, socket.AF_INET6)
            for r in ipr.get_rules(family=fam)
            if r.get("FRA_IIFNAME") == iif
        ]


def _del_rule(ipr: Any, rule: Any) -> None:
    with _netlink(f"Cannot delete rule iif {rule.get('FRA_IIFNAME')}"):
        try:
            ipr.rule(
                "del",
                family=rule["family"],
                iifname=rule.get("FRA_IIFNAME"),
                table=_rule_table(rule),
                priority=rule.get("FRA_PRIORITY") or 0,
            )
        except Exception as e:
            if getattr(e, "code", None) != errno.ENOENT:  # already gone: fine
                raise


def _routes(ipr: Any, family: int, table: int, dst: str, dst_len: int) -> list[Any]:
    with _netlink("Cannot list routes"):
        return [
            r
            for r in ipr.get_routes(family=family, table=table)
            if r.get("RTA_DST") == dst and r["dst_len"] == dst_len
        ]


def routed_up(nic: NicEnv) -> SetupResult:
    addr = _routed_address(nic)
    table = resolve_table(nic.link)
    v6 = addr.version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    plen = 128 if v6 else 32
    with _iproute() as ipr:
        tap = _require_tap(ipr, nic.interface)
        idx = tap["index"]
        added_rule = False
        try:
            with _netlink(f"Cannot bring {nic.interface} up"):
                ipr.link("set", index=idx, state="up")
            if nic.link:
                # A rule left by a previous owner of this tap name (ifdown is
                # best effort) would send our traffic to its table.
                for rule in _iif_rules(ipr, nic.interface):
                    _del_rule(ipr, rule)
                with _netlink(f"Cannot add rule iif {nic.interface} table {table}"):
                    ipr.rule(
                        "add",
                        family=family,
                        iifname=nic.interface,
                        table=table,
                        priority=RULE_PRIORITY,
                    )
                added_rule = True
            route: dict[str, Any] = {
                "family": family,
                "dst": f"{addr}/{plen}",
                "oif": idx,
                "table": table,
                "proto": RTPROT_STATIC,
            }
            if not v6:
                route["scope"] = RT_SCOPE_LINK  # what 'ip route' picks without a gateway
            with _netlink(f"Cannot route {addr} to {nic.interface} in table {table}"):
                ipr.route("replace", **route)
            _sysctl(f"ipv4/conf/{nic.interface}/proxy_arp", "1")
            _sysctl(f"ipv4/conf/{nic.interface}/forwarding", "1")
            if v6:
                _sysctl(f"ipv6/conf/{nic.interface}/proxy_ndp", "1")
                _sysctl(f"ipv6/conf/{nic.interface}/forwarding", "1")
        except BaseException:
            _undo_routed(ipr, nic.interface, idx, family, table, addr, plen, added_rule)
            try:
                ipr.link("set", index=idx, state="down")
            except Exception:
                pass
            raise
    return SetupResult()


def _undo_routed(
    ipr: Any,
    iif: str,
    idx: int | None,
    family: int,
    table: int,
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
    plen: int,
    rule: bool,
) -> None:
    """Remove our route and rule; see the module docstring for what is kept."""
    if idx is not None:
        # With the tap gone the kernel already flushed routes through it; a
        # route to the same IP via another device belongs to someone else.
        for r in _routes(ipr, family, table, str(addr), plen):
            if r.get("RTA_OIF") == idx:
                # The kernel matches scope too (iproute2 sends "nowhere" on
                # delete); pass the dumped values so exactly this route goes.
                with _netlink(f"Cannot delete route {addr}/{plen} table {table}"):
                    try:
                        ipr.route(
                            "del",
                            family=family,
                            dst=f"{addr}/{plen}",
                            table=table,
                            oif=idx,
                            scope=r["scope"],
                            proto=r["proto"],
                        )
                    except Exception as e:
                        if getattr(e, "code", None) != errno.ESRCH:  # raced away: fine
                            raise
    if idx is not None:
        with _netlink("Cannot list routes"):
            # The kernel's own routes (IPv6 link-local on an up tap) say nothing
            # about who owns the tap.
            others = [
                r
                for r in ipr.get_routes(family=family, table=table)
                if r.get("RTA_OIF") == idx and r["proto"] != RTPROT_KERNEL
            ]
        if others:
            return  # the tap name now serves another NIC in this table
        # The tap lives on (a running NIC re-linked to another mode): it must
        # not keep answering ARP/NDP for the node or forwarding.
        sysctls = [f"ipv4/conf/{iif}/proxy_arp", f"ipv4/conf/{iif}/forwarding"]
        if family == socket.AF_INET6:
            sysctls += [f"ipv6/conf/{iif}/proxy_ndp", f"ipv6/conf/{iif}/forwarding"]
        for key in sysctls:
            if (SYSCTL_ROOT / key).exists():  # raced away with the tap: fine
                _sysctl(key, "0")
    if not rule:
        return
    for r in _iif_rules(ipr, iif):
        if r["family"] == family and _rule_table(r) == table:
            _del_rule(ipr, r)


def routed_down(nic: NicEnv, *, claimed: bool = False) -> SetupResult:
    if not nic.ip:
        return SetupResult()  # ifup refused such a NIC: nothing to undo
    addr = _routed_address(nic)
    table = resolve_table(nic.link)
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    plen = 128 if addr.version == 6 else 32
    with _iproute() as ipr:
        tap = _find_link(ipr, nic.interface)
        idx = tap["index"] if tap is not None else None
        if idx is not None and claimed:
            # Another NIC's now; its ifup already replaced our stale rule.
            return SetupResult()
        _undo_routed(ipr, nic.interface, idx, family, table, addr, plen, bool(nic.link))
    return SetupResult()


# --- dispatch ---------------------------------------------------------------------


def _unsupported(nic: NicEnv) -> HypervisorError:
    return HypervisorError(f"Unknown NIC mode {nic.mode!r}", ECode.INVAL)


def nic_up(nic: NicEnv, env: Mapping[str, str] | None = None) -> SetupResult:
    """The built-in ``kvm-ifup`` for ``nic.mode``.

    ``env`` (default: this process's environment, as in ``kvm-ifup``) gives
    the OVS modes what ``NicEnv`` lacks: ``INTERFACE_UUID``, ``MAC``,
    ``CORRAL_ROOT`` (see :mod:`corral.network.ovsnic`). An in-process
    caller (noded) passes the NIC's environment.
    """
    if nic.mode == "bridged":
        return bridged_up(nic)
    if nic.mode == "routed":
        return routed_up(nic)
    if nic.mode in ("openvswitch", "ovn"):
        from corral.network import ovsnic

        ovsnic.nic_up(nic, os.environ if env is None else env)
        return SetupResult()
    raise _unsupported(nic)


def nic_down(
    nic: NicEnv,
    context: str = "",
    *,
    claimed: bool = False,
    env: Mapping[str, str] | None = None,
) -> SetupResult:
    """The built-in ``kvm-ifdown``: undo :func:`nic_up`, idempotently.

    ``context`` (shutdown, migrate-source, migrate-failed, hot-remove) does
    not change what is undone on this node (only node-local state is undone;
    external systems belong to hooks or a custom script, which gets it).
    ``claimed``: another NIC's tap file names this tap (leave it alone).
    Bridged NICs are undone by :func:`corral.network.ifup.bridged_fast`
    before this is reached; here only one without ``LINK`` arrives.
    """
    del context
    if nic.mode == "bridged":
        return SetupResult()
    if nic.mode == "routed":
        return routed_down(nic, claimed=claimed)
    if nic.mode in ("openvswitch", "ovn"):
        # Only while the port's iface-id is still this NIC's (see ovsnic).
        from corral.network import ovsnic

        ovsnic.nic_down(nic, os.environ if env is None else env, claimed=claimed)
        return SetupResult()
    raise _unsupported(nic)
