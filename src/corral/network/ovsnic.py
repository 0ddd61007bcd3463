"""NIC modes ``openvswitch`` and ``ovn`` of the built-in ``kvm-ifup``/``kvm-ifdown``.

Layer: driver (imports ``corral.errors``, ``corral.network.nicenv``,
``corral.paths``; ``corral.network.ovs`` and with it ovsdbapp only when a
NIC is wired). :func:`plan` turns the Ganeti environment into what
:func:`corral.network.ovs.plug_port` needs (pure); :func:`nic_up` and
:func:`nic_down` act.

* ``openvswitch`` (Ganeti's mode): ``LINK`` is an OVS bridge (mandatory);
  ``VLAN`` as in Ganeti (``.10`` access, ``:20:30`` trunk, ``.10:20:30``
  native-untagged with trunks).
* ``ovn``: ``LINK`` is the integration bridge (empty: ``br-int``); the
  Interface's ``iface-id`` is the NIC's UUID (``INTERFACE_UUID``), which
  ovn-controller matches against the logical switch port of that name; a
  ``VLAN`` is refused (the logical switch is the L2 segment).

The node's OVSDB socket is :data:`corral.network.ovs.OVS_DB_SOCK` under the
node's root (``CORRAL_ROOT``), as every other cluster-wide path.

``kvm-ifdown`` removes the port only while its ``iface-id`` is still this
NIC's: after a migration back, or a re-plug, the same tap name or iface-id
may belong to a newer plug that must survive a late ``kvm-ifdown``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ECode, HypervisorError
from corral.network.nicenv import NicEnv, parse_vlan
from corral.paths import Paths

DEFAULT_OVN_BRIDGE = "br-int"
OVS_MODES = ("openvswitch", "ovn")


@dataclass(frozen=True)
class OvsPlug:
    """Where and how one NIC's tap goes into OVS."""

    db: str  # the OVSDB socket path on this node
    bridge: str
    tap: str
    iface_id: str | None
    mac: str
    vm: str
    vlan: int | None
    trunks: tuple[int, ...]


def ovs_db_path(env: Mapping[str, str]) -> str:
    """The node's OVSDB socket: ``OVS_DB_SOCK`` under ``CORRAL_ROOT``."""
    from corral.network.ovs import OVS_DB_SOCK

    return str(Paths(Path(env.get("CORRAL_ROOT") or "/")).host_path(OVS_DB_SOCK))


def plan(nic: NicEnv, env: Mapping[str, str]) -> OvsPlug:
    """What :func:`nic_up` plugs for ``nic`` (pure; raises ``INVAL`` on a bad NIC).

    ``env`` is the script's environment: ``NicEnv`` does not carry
    ``INTERFACE_UUID``, ``MAC`` or ``CORRAL_ROOT``.
    """
    iface_id = env.get("INTERFACE_UUID") or None
    mac = env.get("MAC", "").lower()
    vlan: int | None = None
    trunks: tuple[int, ...] = ()
    if nic.mode == "ovn":
        if nic.vlan:
            raise HypervisorError(
                f"NIC {nic.index or nic.interface} of {nic.instance}: VLAN {nic.vlan!r} cannot "
                "be used in mode ovn (the logical switch is the network segment)",
                ECode.INVAL,
            )
        if not iface_id:
            raise HypervisorError(
                f"OVN NIC {nic.interface} has no INTERFACE_UUID (the logical switch port name)",
                ECode.INVAL,
            )
        bridge = nic.link or DEFAULT_OVN_BRIDGE
    elif nic.mode == "openvswitch":
        if not nic.link:
            raise HypervisorError(
                f"Open vSwitch NIC {nic.interface} has no bridge (LINK is empty)", ECode.INVAL
            )
        bridge = nic.link
        vlans = parse_vlan(nic.vlan)
        if vlans is not None:
            vlan, trunks = vlans.untagged, vlans.tagged
    else:
        raise HypervisorError(f"NIC mode {nic.mode!r} is not an OVS mode", ECode.INVAL)
    return OvsPlug(
        db=ovs_db_path(env),
        bridge=bridge,
        tap=nic.interface,
        iface_id=iface_id,
        mac=mac,
        vm=nic.instance,
        vlan=vlan,
        trunks=tuple(trunks),
    )


def nic_up(nic: NicEnv, env: Mapping[str, str], *, wait: bool = True) -> None:
    """Plug the tap (see :func:`corral.network.ovs.plug_port`)."""
    from corral.network.ovs import plug_port

    p = plan(nic, env)
    plug_port(
        p.db,
        p.bridge,
        p.tap,
        iface_id=p.iface_id,
        mac=p.mac,
        vm=p.vm,
        vlan=p.vlan,
        trunks=p.trunks,
        wait=wait,
    )


def nic_down(nic: NicEnv, env: Mapping[str, str], *, claimed: bool = False) -> bool:
    """Unplug the tap if it is still this NIC's; True if a port was removed.

    Without ``INTERFACE_UUID`` (an old runtime file, openvswitch mode) the
    port goes by name unless ``claimed`` (another NIC's tap file names it).
    """
    from corral.network.ovs import unplug_port

    if claimed:
        return False
    iface_id = env.get("INTERFACE_UUID") or None
    return unplug_port(ovs_db_path(env), nic.interface, only_if_iface_id=iface_id)
