"""The test guest's two interfaces: its kernel command line and its console lines.

Layer: pure (imports ``ipaddress``, ``re`` and the test guest model). The
KVM driver, tests, demo and benchmark build the ``-append`` string with
:func:`kernel_cmdline` and read the serial console with :func:`parse_line`;
the guest side of both is :mod:`corral.testguest.initscript`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from corral.errors import ECode
from corral.testguest.model import GuestError

BASE_CMDLINE = ("console=ttyS0", "quiet")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


# --- the kernel command line --------------------------------------------------------------


def _key(nic: str) -> str:
    """A NIC as the guest matches it: 12 hex digits of a MAC, or an ifname."""
    low = nic.lower()
    if _MAC_RE.match(low):
        return low.replace(":", "")
    if re.fullmatch(r"[0-9a-f]{12}", low):
        return low
    if _IFNAME_RE.match(nic) and ":" not in nic:
        return nic
    raise GuestError(f"not a MAC address or interface name: {nic!r}", ECode.INVAL)


def kernel_cmdline(
    addresses: Mapping[str, str | Iterable[str]] | None = None,
    *,
    gateway: str | None = None,
    gateway6: str | None = None,
    extra: Iterable[str] = (),
) -> str:
    """The ``-append`` string for the test guest.

    ``addresses`` maps a NIC (MAC ``52:54:00:…`` or ifname ``eth0``) to one
    or more ``addr/prefix`` strings, IPv4 or IPv6; the guest applies them
    each time that NIC appears. Raises :class:`GuestError` (code INVAL)
    on a malformed NIC or address.
    """
    words = list(BASE_CMDLINE)
    for nic, addrs in (addresses or {}).items():
        key = _key(nic)
        for addr in [addrs] if isinstance(addrs, str) else list(addrs):
            try:
                iface = ipaddress.ip_interface(addr)
            except ValueError as exc:
                raise GuestError(f"bad address for {nic}: {addr!r}", ECode.INVAL) from exc
            if "/" not in addr:
                raise GuestError(f"address for {nic} needs a /prefix: {addr!r}", ECode.INVAL)
            family = "ip" if iface.version == 4 else "ip6"
            words.append(f"corral.{family}.{key}={iface.with_prefixlen}")
    for name, gw, version in (("gw", gateway, 4), ("gw6", gateway6, 6)):
        if gw is None:
            continue
        try:
            ok = ipaddress.ip_address(gw).version == version
        except ValueError:
            ok = False
        if not ok:
            raise GuestError(f"bad IPv{version} gateway: {gw!r}", ECode.INVAL)
        words.append(f"corral.{name}={gw}")
    words.extend(extra)
    return " ".join(words)


# --- console lines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NetDev:
    ifname: str
    mac: str


SECTOR_BYTES = 512  # the unit of /sys/block/<disk>/size, whatever the disk's block size


@dataclass(frozen=True)
class BlockDev:
    """A disk as the guest sees it: ``<name>/<serial>/<sectors>`` in ``blk=``."""

    name: str
    serial: str  # "" when QEMU was given no serial=
    sectors: int | None = None  # None when the line carried no size (older guests)

    @property
    def size_bytes(self) -> int | None:
        return None if self.sectors is None else self.sectors * SECTOR_BYTES

    @property
    def size_mib(self) -> float | None:
        size = self.size_bytes
        return None if size is None else size / (1 << 20)


@dataclass(frozen=True)
class DevicesLine:
    """``DEVICES net=… blk=… up=…``: what the guest sees, after every change."""

    net: tuple[NetDev, ...]
    blk: tuple[BlockDev, ...]
    uptime: float

    @property
    def macs(self) -> frozenset[str]:
        return frozenset(n.mac for n in self.net)

    @property
    def serials(self) -> frozenset[str]:
        return frozenset(b.serial for b in self.blk if b.serial)


@dataclass(frozen=True)
class AddrLine:
    """``ADDR <ifname> <mac> <addr>/<prefix>``: an address was applied."""

    ifname: str
    mac: str
    address: str


@dataclass(frozen=True)
class BootLine:
    """``GUEST BOOT <kernel version>``: the guest's init started."""

    kernel_version: str


@dataclass(frozen=True)
class PowerOffLine:
    """``POWEROFF``: the ACPI power button was seen; the guest powers off."""


ConsoleLine = DevicesLine | AddrLine | BootLine | PowerOffLine

_DEVICES_RE = re.compile(r"^DEVICES net=(?P<net>\S*) blk=(?P<blk>\S*) up=(?P<up>[0-9.]+)$")


def _entries(field: str, most: int) -> list[list[str]]:
    """``a/b,c/d/e``: the comma-separated entries, each split at ``/``.

    An entry has a non-empty name and 1 to ``most - 1`` values after it.
    """
    out = []
    for item in field.split(",") if field else []:
        parts = item.split("/")
        if not 2 <= len(parts) <= most or not parts[0]:
            raise ValueError(f"bad device entry {item!r}")
        out.append(parts)
    return out


def _block_dev(parts: list[str]) -> BlockDev:
    # <disk>/<serial> (older guests) or <disk>/<serial>/<sectors>; the count is
    # empty if the disk went away between the guest's listing and its read
    if len(parts) == 2 or not parts[2]:
        return BlockDev(parts[0], parts[1])
    if not re.fullmatch(r"[0-9]+", parts[2]):
        raise ValueError(f"bad sector count {parts[2]!r}")
    return BlockDev(parts[0], parts[1], int(parts[2]))


def parse_line(raw: str | bytes) -> ConsoleLine | None:
    """The report on one console line, or ``None`` for anything else.

    Kernel messages and other noise are not errors: the console is shared.
    Trailing ``\\r`` (the serial line's CRLF) is ignored.
    """
    line = (raw.decode(errors="replace") if isinstance(raw, bytes) else raw).strip("\r\n ")
    if line.startswith("DEVICES "):
        m = _DEVICES_RE.match(line)
        if not m:
            return None
        try:
            net = tuple(NetDev(n, v) for n, v in _entries(m["net"], 2))
            blk = tuple(_block_dev(p) for p in _entries(m["blk"], 3))
        except ValueError:
            return None
        return DevicesLine(net, blk, float(m["up"]))
    parts = line.split()
    if len(parts) == 4 and parts[0] == "ADDR":
        return AddrLine(parts[1], parts[2], parts[3])
    if len(parts) == 3 and parts[:2] == ["GUEST", "BOOT"]:
        return BootLine(parts[2])
    if line == "POWEROFF":
        return PowerOffLine()
    return None
