"""Put a tap on a Linux bridge with the standard library only (bridged, no VLAN).

Layer: driver (imports ``corral.errors`` and the standard library). This is
the fast path of the built-in ``kvm-ifup``: ``import pyroute2`` alone costs
more than the whole wiring, and ``kvm-ifup`` runs once per NIC on every
instance start and NIC hot-plug. :mod:`corral.network.setup` keeps pyroute2
for VLANs and routed NICs.

Facts about a link (kind, master, MTU, MAC) come from one ``RTM_GETLINK``
request on a netlink socket; changes go through the classic ioctls
(``SIOCSIFHWADDR``, ``SIOCSIFMTU``, ``SIOCBRADDIF``/``SIOCBRDELIF``,
``SIOCSIFFLAGS``). Both act in the caller's network namespace. ``/sys/class/net``
is not used on purpose: it shows the namespace of whoever mounted ``/sys``,
which is not ours after a bare ``setns(2)`` (``nsenter --net``, the virtual
cluster's nodes).

What :func:`enslave` does is exactly the bridged ``kvm-ifup`` without VLAN:
``bridge`` must exist and be a bridge (else nothing is touched), the tap gets
an ``fe:…`` MAC and the bridge's MTU (before enslaving: a smaller tap MTU
would lower the bridge's), is made a port of ``bridge`` and brought up. A tap
that is a port of another bridge (NIC modify re-runs ``kvm-ifup`` with a new
``LINK``) is detached from it first, before its MTU changes, so the old
bridge's MTU is not pulled along. On a failure after the checks the tap is
left a port of no bridge, and down. :func:`release` is the bridged
``kvm-ifdown``: the reverse, for a tap that is still a port of the bridge.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from corral.errors import ECode, HypervisorError

# <linux/sockios.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCSIFHWADDR = 0x8924
SIOCBRADDIF = 0x89A2
SIOCBRDELIF = 0x89A3
IFF_UP = 0x1
ARPHRD_ETHER = 1
IFNAMSIZ = 16
# struct ifreq: the name, then a union whose largest member (struct ifmap) is
# 24 bytes on 64-bit Linux.
_IFREQ_SIZE = IFNAMSIZ + 24

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>
NLMSG_ERROR = 2
RTM_NEWLINK = 16
RTM_GETLINK = 18
NLM_F_REQUEST = 0x1
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_RECV_SIZE = 65536  # one link's RTM_NEWLINK (with its statistics) is a few KiB


class LinkInfo:
    """What ``ip -d link show <name>`` says about one link, as far as we need it.

    A plain class, not a dataclass: ``import dataclasses`` (it pulls in
    ``inspect``) would cost ``kvm-ifup`` more than all of its work.
    """

    __slots__ = ("address", "index", "kind", "master", "mtu", "name")

    def __init__(
        self, name: str, index: int, kind: str, master: int, mtu: int, address: bytes
    ) -> None:
        self.name = name
        self.index = index
        self.kind = kind  # IFLA_INFO_KIND ("bridge", "tun", "veth", …); "" for a plain device
        self.master = master  # ifindex of the link's master (its bridge), 0 for none
        self.mtu = mtu
        self.address = address  # the hardware address; empty for links without one

    def __repr__(self) -> str:
        return (
            f"LinkInfo(name={self.name!r}, index={self.index}, kind={self.kind!r}, "
            f"master={self.master}, mtu={self.mtu}, address={self.address.hex(':')!r})"
        )


# --- reading: one RTM_GETLINK ------------------------------------------------------


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = start
    while pos + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size:
            break
        out.setdefault(kind & _NLA_TYPE_MASK, data[pos + _RTATTR.size : pos + length])
        pos += _align(length)
    return out


def _parse_link(name: str, msg: bytes) -> LinkInfo:
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(msg, _NLMSGHDR.size)
    attrs = _attrs(msg, _NLMSGHDR.size + _IFINFOMSG.size, len(msg))
    kind = ""
    linkinfo = attrs.get(IFLA_LINKINFO)
    if linkinfo is not None:
        raw = _attrs(linkinfo, 0, len(linkinfo)).get(IFLA_INFO_KIND, b"")
        kind = raw.split(b"\0", 1)[0].decode("ascii", "replace")

    def u32(attr: int) -> int:
        value = attrs.get(attr)
        return int(struct.unpack_from("=I", value)[0]) if value and len(value) >= 4 else 0

    return LinkInfo(
        name=name,
        index=index,
        kind=kind,
        master=u32(IFLA_MASTER),
        mtu=u32(IFLA_MTU),
        address=attrs.get(IFLA_ADDRESS, b""),
    )


def link_info(name: str) -> LinkInfo | None:
    """The link called ``name`` in this network namespace, ``None`` if there is none.

    Raises :class:`HypervisorError` (``ENVIRON``) when netlink itself fails.
    """
    what = f"Cannot look up link {name}"
    encoded = name.encode() + b"\0"
    if not 1 < len(encoded) <= IFNAMSIZ:
        return None  # the kernel has no such name (and would answer EINVAL)
    attr = _RTATTR.pack(_RTATTR.size + len(encoded), IFLA_IFNAME) + encoded
    attr += b"\0" * (_align(len(attr)) - len(attr))
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr
    seq = 1
    request = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST, seq, 0)
    try:
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        ) as nl:
            nl.sendall(request + body)
            while True:
                data = nl.recv(_RECV_SIZE)
                pos = 0
                while pos + _NLMSGHDR.size <= len(data):
                    length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, pos)
                    if length < _NLMSGHDR.size or pos + length > len(data):
                        raise HypervisorError(f"{what}: truncated netlink reply", ECode.ENVIRON)
                    msg = data[pos : pos + length]
                    pos += _align(length)
                    if mseq != seq:
                        continue
                    if mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", msg, _NLMSGHDR.size)
                        if -code == errno.ENODEV:
                            return None
                        raise HypervisorError(f"{what}: {os.strerror(-code)}", ECode.ENVIRON)
                    if mtype == RTM_NEWLINK:
                        return _parse_link(name, msg)
    except OSError as e:
        raise HypervisorError(f"{what}: {e.strerror or e}", ECode.ENVIRON) from e


def is_bridge(name: str) -> bool:
    """Whether ``name`` is a bridge in this network namespace."""
    link = link_info(name)
    return link is not None and link.kind == "bridge"


# --- changing: ioctls --------------------------------------------------------------


def _ifreq(name: str, payload: bytes = b"") -> bytearray:
    buf = bytearray(_IFREQ_SIZE)
    raw = name.encode()
    buf[: len(raw)] = raw
    buf[IFNAMSIZ : IFNAMSIZ + len(payload)] = payload
    return buf


def _ioctl(sock: socket.socket, request: int, name: str, payload: bytes = b"") -> bytearray:
    buf = _ifreq(name, payload)
    fcntl.ioctl(sock.fileno(), request, buf)
    return buf


def _get_flags(sock: socket.socket, name: str) -> int:
    (flags,) = struct.unpack_from("=H", _ioctl(sock, SIOCGIFFLAGS, name), IFNAMSIZ)
    return int(flags)


def _set_flags(sock: socket.socket, name: str, flags: int) -> None:
    _ioctl(sock, SIOCSIFFLAGS, name, struct.pack("=H", flags & 0xFFFF))


def _set_mac(sock: socket.socket, name: str, mac: bytes) -> None:
    # struct sockaddr: family, then 14 bytes of address
    _ioctl(sock, SIOCSIFHWADDR, name, struct.pack("=H14s", ARPHRD_ETHER, mac))


def _set_mtu(sock: socket.socket, name: str, mtu: int) -> None:
    _ioctl(sock, SIOCSIFMTU, name, struct.pack("=i", mtu))


def _port(sock: socket.socket, request: int, bridge: str, port_index: int) -> None:
    _ioctl(sock, request, bridge, struct.pack("=i", port_index))


def _fail(what: str, e: OSError) -> HypervisorError:
    return HypervisorError(f"{what}: {e.strerror or e}", ECode.ENVIRON)


def _fe_mac(address: bytes) -> bytes:
    # A Linux bridge without a pinned MAC takes its lowest port MAC; 0xfe keeps
    # taps out of that choice (as Ganeti's and libvirt's taps do).
    return b"\xfe" + address[1:]


def enslave(tap: str, bridge: str) -> None:
    """Make ``tap`` an up port of ``bridge`` with an ``fe:…`` MAC and the bridge's MTU.

    Idempotent: a tap already on ``bridge`` stays there; one on another bridge
    moves. Raises :class:`HypervisorError` (``ENVIRON``) — before touching
    anything when ``bridge`` is missing or not a bridge, or ``tap`` is missing.
    """
    br = link_info(bridge)
    if br is None:
        raise HypervisorError(f"Bridge {bridge} does not exist on this node", ECode.ENVIRON)
    if br.kind != "bridge":
        raise HypervisorError(
            f"Link {bridge} is not a bridge (it is a {br.kind or 'plain'} device)", ECode.ENVIRON
        )
    port = link_info(tap)
    if port is None:
        raise HypervisorError(f"Interface {tap} does not exist", ECode.ENVIRON)
    if len(port.address) != 6:
        raise HypervisorError(
            f"Interface {tap} has no Ethernet address (is it a tap?)", ECode.ENVIRON
        )

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        master = port.master
        try:
            if master and master != br.index:
                old = _master_name(master)
                try:
                    _port(sock, SIOCBRDELIF, old, port.index)
                except OSError as e:
                    raise _fail(f"Cannot remove {tap} from {old}", e) from e
                master = 0
            try:
                mac = _fe_mac(port.address)
                if mac != port.address:
                    _set_mac(sock, tap, mac)
                if port.mtu != br.mtu:
                    _set_mtu(sock, tap, br.mtu)
            except OSError as e:
                raise _fail(f"Cannot set MAC/MTU of {tap}", e) from e
            if master != br.index:
                try:
                    _port(sock, SIOCBRADDIF, bridge, port.index)
                except OSError as e:
                    raise _fail(f"Cannot add {tap} to bridge {bridge}", e) from e
                master = br.index
            try:
                flags = _get_flags(sock, tap)
                if not flags & IFF_UP:
                    _set_flags(sock, tap, flags | IFF_UP)
            except OSError as e:
                raise _fail(f"Cannot bring {tap} up", e) from e
        except BaseException:
            _undo(sock, tap, port.index, bridge if master == br.index else "")
            raise


def release(tap: str, bridge: str) -> bool:
    """Undo :func:`enslave`: take ``tap`` off ``bridge`` and bring it down.

    Only a tap (kind ``tun``) that is a port of ``bridge`` right now is
    touched; anything else (the tap is gone, is a port of another bridge, the
    name now belongs to a non-tap link) is left as it is and False returned.
    The caller decides whether the tap is still the NIC's (see
    :func:`corral.network.nicfiles.owners`). The MAC and MTU stay: the tap
    disappears with QEMU anyway, and a re-link's ``enslave`` sets both again.
    Raises :class:`HypervisorError` (``ENVIRON``) when the kernel refuses.
    """
    port = link_info(tap)
    if port is None or port.kind != "tun" or not port.master:
        return False
    br = link_info(bridge)
    if br is None or br.kind != "bridge" or port.master != br.index:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            _port(sock, SIOCBRDELIF, bridge, port.index)
        except OSError as e:
            if e.errno not in (errno.ENODEV, errno.EINVAL):  # raced away: fine
                raise _fail(f"Cannot remove {tap} from bridge {bridge}", e) from e
            return False
        try:
            flags = _get_flags(sock, tap)
            if flags & IFF_UP:
                _set_flags(sock, tap, flags & ~IFF_UP)
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise _fail(f"Cannot bring {tap} down", e) from e
    return True


def _master_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError as e:
        raise _fail(f"Cannot look up link #{index}", e) from e


def _undo(sock: socket.socket, tap: str, index: int, bridge: str) -> None:
    """Leave the tap as a failed ``kvm-ifup`` should: a port of no bridge, down.

    Best effort: the error that got us here is the one worth reporting.
    """
    if bridge:
        try:
            _port(sock, SIOCBRDELIF, bridge, index)
        except OSError:
            pass
    try:
        flags = _get_flags(sock, tap)
        if flags & IFF_UP:
            _set_flags(sock, tap, flags & ~IFF_UP)
    except OSError:
        pass
