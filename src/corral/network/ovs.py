"""Open vSwitch on a node: taps as OVS ports (the OVS side of ``kvm-ifup``).

Layer: driver (imports ``corral.errors``, ``corral.network.ovsdb``;
``ovsdbapp``/``ovs`` lazily, so importing this module costs nothing). The
node's Open_vSwitch database (local ``ovsdb-server``, ``unix:`` socket
:data:`OVS_DB_SOCK` under the node's root), over the process-wide cached
connection of :mod:`corral.network.ovsdb`: :func:`plug_port`,
:func:`unplug_port`, :func:`bridge_exists`, :func:`port_of`,
:func:`port_info`, and the tap preparation OVS needs
(:func:`disable_tx_checksum`, ``ethtool -K <tap> tx off`` through the
``SIOCETHTOOL`` ioctl, without spawning ``ethtool``: with the userspace
datapath, unfinished checksums break TCP). Caveat, measured: QEMU's
``TUNSETOFFLOAD`` (at netdev set-up, and again when the guest's virtio-net
driver acks its features) rewrites the tap's wanted features and turns TX
checksum offload back on; and the guest's own partial checksums (guest TX)
are the virtio-net device's ``csum`` property, not the tap's. The tap
setting holds until QEMU touches it.

What a plugged port looks like (the OVS integration convention,
``Documentation/topics/integration.rst``, which ``ovn-controller`` reads):
Port and Interface named after the tap, Interface ``type`` empty (a system
device), ``external_ids`` ``iface-id`` (the NIC UUID: OVN binds the logical
switch port of that name), ``attached-mac``, ``iface-status=active``,
``vm-uuid`` (the instance name). VLANs (NIC mode ``openvswitch``, Ganeti's
syntax, see :func:`corral.network.nicenv.parse_vlan`): an untagged VLAN alone
is an access port (``tag``), tagged ones alone a trunk (``trunks``), both a
``native-untagged`` port (Ganeti sets ``tag`` and ``trunks`` and leaves the
mode to OVS, which then ignores the trunks).

Every call blocks (a queue hand-off to the connection's thread and one OVSDB
round trip); async callers run them in a thread.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from corral.errors import CorralError, ECode, HypervisorError
from corral.network.ovsdb import Db, normalize_remote, open_db, transact, unix_paths

OVS_DB_SOCK = "/run/openvswitch/db.sock"
VSWITCHD_TIMEOUT = 5.0
VSWITCH_SCHEMA = "Open_vSwitch"
_VSWITCH_TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")
# Interface external_ids this module owns.
_OUR_KEYS = ("iface-id", "attached-mac", "iface-status", "vm-uuid")

# <linux/sockios.h>, <linux/ethtool.h>, <linux/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
IFF_UP = 0x1
IFNAMSIZ = 16


# --- the node's Open_vSwitch database ----------------------------------------------


def _vswitch(db_path: str) -> Callable[[bool], Db]:
    def connect(fresh: bool) -> Db:
        return open_db(db_path, VSWITCH_SCHEMA, _VSWITCH_TABLES, fresh=fresh)

    return connect


def _rows(db: Db, table: str) -> Iterable[Any]:
    return list(db.idl.tables[table].rows.values())


def _by_name(db: Db, table: str, name: str) -> Any | None:
    for row in _rows(db, table):
        if row.name == name:
            return row
    return None


def _bridge_of(db: Db, port: Any) -> Any | None:
    for br in _rows(db, "Bridge"):
        if port in br.ports:
            return br
    return None


def _opt(value: Any) -> Any | None:
    """An optional OVSDB column (a list of 0 or 1 items) as a value or ``None``."""
    return value[0] if value else None


@dataclass(frozen=True)
class VlanConfig:
    """Port columns for Ganeti's VLAN syntax (see the module docstring)."""

    tag: list[int]
    trunks: list[int]
    vlan_mode: list[str]


def vlan_config(vlan: int | None, trunks: Sequence[int]) -> VlanConfig:
    """The ``tag``/``trunks``/``vlan_mode`` of a port (pure)."""
    for vid in ([vlan] if vlan is not None else []) + list(trunks):
        if not 1 <= vid <= 4094:
            raise HypervisorError(f"Invalid VLAN id {vid} (1-4094)", ECode.INVAL)
    if vlan is not None and trunks:
        return VlanConfig([vlan], sorted(set(trunks)), ["native-untagged"])
    if vlan is not None:
        return VlanConfig([vlan], [], [])
    return VlanConfig([], sorted(set(trunks)), [])


def plug_port(
    db: str,
    bridge: str,
    tap: str,
    *,
    iface_id: str | None,
    mac: str,
    vm: str,
    vlan: int | None = None,
    trunks: Sequence[int] = (),
    prepare_tap: bool = True,
    wait: bool = True,
) -> None:
    """Make ``tap`` a port of OVS ``bridge``, idempotently (the OVS ``kvm-ifup``).

    ``db`` is the OVSDB socket path (or remote). The port is created if
    missing and moved if it sits on another bridge; its VLAN columns and
    Interface ``external_ids`` are set as the module docstring says (other
    keys, e.g. ``ovn-installed``, survive a re-plug by the same NIC, not one
    by another). ``prepare_tap`` first turns TX checksum offload off and
    brings the tap up (it must exist). ``wait`` waits until ``ovs-vswitchd``
    applied the change and reports an Interface error (e.g. the tap vanished);
    on such a failure the port is removed again.

    Raises :class:`HypervisorError`: ``ENVIRON`` (no such bridge, OVS not
    running, vswitchd failed or too slow), ``INVAL`` (bad VLAN, bad names).
    """
    _check_name("tap", tap)
    _check_name("bridge", bridge)
    config = vlan_config(vlan, trunks)
    ids = {"iface-status": "active", "vm-uuid": vm}
    if mac:
        ids["attached-mac"] = mac
    if iface_id:
        ids["iface-id"] = iface_id
    connect = _vswitch(db)
    connect(False)  # OVS not running: fail before the tap is touched
    if prepare_tap:
        disable_tx_checksum(tap)
        set_up(tap)

    def fn(d: Db, txn: Any) -> Any:
        br = _by_name(d, "Bridge", bridge)
        if br is None:
            raise HypervisorError(
                f"OVS bridge {bridge} does not exist (OVSDB {d.remote})", ECode.ENVIRON
            )
        port = _by_name(d, "Port", tap)
        if port is not None and port not in br.ports:
            old = _bridge_of(d, port)
            if old is not None:
                old.delvalue("ports", port)
            port = None
        # Columns of a row inserted by this transaction cannot be read back.
        new_port = port is None
        iface = None
        if port is None:
            port = txn.insert(d.idl.tables["Port"])
            port.name = tap
            br.addvalue("ports", port)
        else:
            iface = next((i for i in port.interfaces if i.name == tap), None)
        old_ids: dict[str, str] = {}
        if iface is None:
            iface = txn.insert(d.idl.tables["Interface"])
            iface.name = tap
            port.interfaces = [iface]
        else:
            old_ids = dict(iface.external_ids)
            if iface.type != "":
                iface.type = ""
        keep = old_ids.get("iface-id") == ids.get("iface-id")
        new_ids = {k: v for k, v in old_ids.items() if keep and k not in _OUR_KEYS}
        new_ids.update(ids)
        if new_ids != old_ids:
            iface.external_ids = new_ids
        for column, value in (
            ("tag", config.tag),
            ("trunks", config.trunks),
            ("vlan_mode", config.vlan_mode),
        ):
            if new_port and not value:
                continue
            if new_port or list(getattr(port, column)) != value:
                setattr(port, column, value)
        if not wait:
            return None
        # ovs-vsctl's wait: bump next_cfg with the change; vswitchd copies it
        # to cur_cfg once it reconfigured.
        ovs = next(iter(_rows(d, "Open_vSwitch")), None)
        if ovs is None:
            raise HypervisorError(
                f"OVSDB {d.remote} has no Open_vSwitch row (was ovs-vswitchd ever started?)",
                ECode.ENVIRON,
            )
        ovs.increment("next_cfg")
        return txn  # its new next_cfg is known once committed

    idl_txn = transact(connect, f"Cannot plug {tap} into OVS bridge {bridge}", fn)
    if idl_txn is None:
        return
    try:
        target = idl_txn.get_increment_new_value()
        _wait_vswitchd(connect(False), tap, bridge, max(int(target or 0), 0))
    except BaseException:
        try:
            unplug_port(db, tap, only_if_iface_id=iface_id)
        except CorralError:
            pass
        raise


def _wait_vswitchd(d: Db, tap: str, bridge: str, target: int) -> None:
    """Wait for ``cur_cfg >= target`` and ``tap``'s OpenFlow port (or its error).

    Polls the IDL replica, which the connection's thread keeps current.
    """
    timeout = VSWITCHD_TIMEOUT
    deadline = time.monotonic() + timeout
    applied = False
    while True:
        with d.conn.lock:
            ovs = next(iter(_rows(d, "Open_vSwitch")), None)
            applied = applied or (ovs is not None and int(ovs.cur_cfg) >= target)
            iface = _by_name(d, "Interface", tap)
            ofport = _opt(iface.ofport) if iface is not None else None
            err = _opt(iface.error) if iface is not None else None
        if applied and (err or ofport is not None):
            break
        if time.monotonic() >= deadline:
            if not applied:
                raise HypervisorError(
                    f"ovs-vswitchd did not apply the new port {tap} on {bridge} within "
                    f"{timeout:g}s (is ovs-vswitchd running? OVSDB {d.remote})",
                    ECode.ENVIRON,
                )
            break
        time.sleep(0.002)
    if err or ofport is None or ofport < 0:
        raise HypervisorError(
            f"ovs-vswitchd could not add {tap} to {bridge}: {err or 'no OpenFlow port'}",
            ECode.ENVIRON,
        )


def unplug_port(db: str, tap: str, *, only_if_iface_id: str | None) -> bool:
    """Remove port ``tap`` from whatever bridge holds it, idempotently.

    With ``only_if_iface_id`` the port is removed only while its Interface's
    ``iface-id`` still is that value: the tap name (or the NIC, plugged again
    after migrating back) may belong to another NIC by now. Returns whether a
    port was removed. A missing OVSDB socket means no OVS, hence no port: not
    an error.
    """
    _check_name("tap", tap)
    paths = unix_paths(normalize_remote(db))
    if paths and not any(map(os.path.exists, paths)):
        return False

    def fn(d: Db, txn: Any) -> bool:
        port = _by_name(d, "Port", tap)
        if port is None:
            return False
        if only_if_iface_id is not None:
            owners = {i.external_ids.get("iface-id") for i in port.interfaces}
            for i in port.interfaces:
                i.verify("external_ids")  # a concurrent re-plug makes the txn retry
            if owners != {only_if_iface_id}:
                return False
        br = _bridge_of(d, port)
        if br is not None:
            br.delvalue("ports", port)
        else:
            port.delete()
        return True

    return bool(transact(_vswitch(db), f"Cannot remove OVS port {tap}", fn))


def bridge_exists(db: str, name: str) -> bool:
    """Whether the OVS bridge ``name`` exists in the database at ``db``."""

    def fn(d: Db, txn: Any) -> bool:
        return _by_name(d, "Bridge", name) is not None

    return bool(transact(_vswitch(db), f"Cannot look up OVS bridge {name}", fn))


def port_of(db: str, iface_id: str) -> str | None:
    """The port (tap) whose Interface has ``external_ids:iface-id=iface_id``, if any.

    Should several claim it (a stale one left behind), the one vswitchd has an
    OpenFlow port for wins.
    """

    def fn(d: Db, txn: Any) -> str | None:
        found = [i for i in _rows(d, "Interface") if i.external_ids.get("iface-id") == iface_id]
        found.sort(key=lambda i: (_opt(i.ofport) or -1) < 0)
        return str(found[0].name) if found else None

    result = transact(_vswitch(db), f"Cannot look up the port of iface-id {iface_id}", fn)
    return None if result is None else str(result)


@dataclass(frozen=True)
class PortInfo:
    """What a test or ``verify`` wants to know about one port (read back)."""

    name: str
    bridge: str | None
    external_ids: dict[str, str]
    tag: int | None
    trunks: tuple[int, ...]
    vlan_mode: str | None
    ofport: int | None
    error: str | None


def port_info(db: str, tap: str) -> PortInfo | None:
    """Port ``tap`` as OVSDB has it, or ``None``."""

    def fn(d: Db, txn: Any) -> PortInfo | None:
        port = _by_name(d, "Port", tap)
        if port is None:
            return None
        br = _bridge_of(d, port)
        iface = next((i for i in port.interfaces if i.name == tap), None)
        return PortInfo(
            name=tap,
            bridge=None if br is None else str(br.name),
            external_ids=dict(iface.external_ids) if iface is not None else {},
            tag=_opt(port.tag),
            trunks=tuple(sorted(port.trunks)),
            vlan_mode=_opt(port.vlan_mode),
            ofport=_opt(iface.ofport) if iface is not None else None,
            error=_opt(iface.error) if iface is not None else None,
        )

    result = transact(_vswitch(db), f"Cannot look up OVS port {tap}", fn)
    return result if isinstance(result, PortInfo) else None


def _check_name(what: str, name: str) -> None:
    if not name or len(name) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise HypervisorError(f"Invalid {what} name {name!r}", ECode.INVAL)


# --- the tap itself ----------------------------------------------------------------


def _ethtool(tap: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifreq = struct.pack("16sP16x", tap.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    return int(struct.unpack("II", value.raw)[1])


def _tap_error(what: str, tap: str, e: OSError) -> HypervisorError:
    if e.errno == errno.ENODEV:
        return HypervisorError(f"Interface {tap} does not exist", ECode.ENVIRON)
    return HypervisorError(f"Cannot {what} on {tap}: {e.strerror}", ECode.ENVIRON)


def disable_tx_checksum(tap: str) -> None:
    """``ethtool -K <tap> tx off`` (the ``ETHTOOL_STXCSUM`` ioctl), in this namespace."""
    _check_name("tap", tap)
    try:
        _ethtool(tap, ETHTOOL_STXCSUM, 0)
    except OSError as e:
        raise _tap_error("turn off TX checksum offload", tap, e) from None


def tx_checksum_enabled(tap: str) -> bool:
    """Whether ``tap`` offloads TX checksums (``ETHTOOL_GTXCSUM``)."""
    try:
        return bool(_ethtool(tap, ETHTOOL_GTXCSUM))
    except OSError as e:
        raise _tap_error("read TX checksum offload", tap, e) from None


def set_up(tap: str) -> None:
    """Bring ``tap`` up (``SIOCSIFFLAGS``), in this namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            req = struct.pack("16sH22x", tap.encode(), 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
            if not flags & IFF_UP:
                req = struct.pack("16sH22x", tap.encode(), flags | IFF_UP)
                fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, req)
        except OSError as e:
            raise _tap_error("bring the interface up", tap, e) from None
