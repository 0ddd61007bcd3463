"""Open TAP devices for QEMU (``/dev/net/tun`` + ``TUNSETIFF``).

Layer: driver (imports ``corral.errors`` only). noded opens the tap itself and
hands the fd to QEMU (``pass_fds`` at start, SCM_RIGHTS + ``getfd`` for
hot-add), like Ganeti's ``OpenTap``.

The tap is never made persistent (no ``TUNSETPERSIST``): it exists exactly as
long as some process holds one of its fds. Once QEMU, the last holder, exits
or closes the netdev, the kernel deletes the tap together with its routes and
bridge port, so a crashed VM never leaves a stray tap behind. The fd is
close-on-exec; the caller passes it to QEMU explicitly.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from corral.errors import ECode, HypervisorError

TUN_DEVICE = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_ONE_QUEUE = 0x2000  # ignored by kernels >= 3.8; kept as Ganeti sets it
IFF_VNET_HDR = 0x4000

IFNAMSIZ = 16  # including the terminating NUL
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, flags, padding to 40 bytes


@dataclass
class Tap:
    """An open tap: the fd keeps it alive."""

    fd: int
    name: str
    vnet_hdr: bool
    multi_queue: bool = False

    def close(self) -> None:
        """Close this process's fd (the tap vanishes once no process holds one)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_ifname(name: str) -> None:
    """Raise :class:`HypervisorError` unless ``name`` is a usable interface name."""
    if (
        not name
        or len(name) >= IFNAMSIZ
        or name in (".", "..")
        or any(c in name for c in "/:% \t\n\0")
    ):
        raise HypervisorError(f"Invalid interface name {name!r}", ECode.INVAL)


def tun_features(fd: int) -> int:
    """The ``IFF_*`` flags the kernel's tun driver supports."""
    buf = fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4)
    (features,) = struct.unpack("I", buf)
    return int(features)


def open_tap(name: str | None = None, *, vnet_hdr: bool = True, multi_queue: bool = False) -> Tap:
    """Create (or attach to) a tap and return its open fd.

    ``name=None`` lets the kernel choose (``tapN``). ``vnet_hdr`` is honoured
    only when the kernel supports it (``Tap.vnet_hdr`` says what was set).
    With ``multi_queue`` every further ``open_tap(tap.name, multi_queue=True)``
    attaches one more queue to the same tap.

    Raises :class:`HypervisorError` (``ENVIRON``) when ``/dev/net/tun`` cannot
    be opened or the kernel refuses the name (e.g. a non-tap link of that name
    exists, ``EBUSY``/``EINVAL``).
    """
    if name is not None:
        check_ifname(name)
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise HypervisorError(f"Cannot open {TUN_DEVICE}: {e.strerror}", ECode.ENVIRON) from e
    try:
        flags = IFF_TAP | IFF_NO_PI
        flags |= IFF_MULTI_QUEUE if multi_queue else IFF_ONE_QUEUE
        with_vnet_hdr = False
        if vnet_hdr and tun_features(fd) & IFF_VNET_HDR:
            flags |= IFF_VNET_HDR
            with_vnet_hdr = True
        req = _IFREQ.pack((name or "").encode(), flags)
        try:
            res = fcntl.ioctl(fd, TUNSETIFF, req)
        except OSError as e:
            what = f"tap {name}" if name else "a tap"
            busy = e.errno in (errno.EBUSY, errno.EINVAL) and name
            hint = " (a link of that name exists and is not a tap?)" if busy else ""
            raise HypervisorError(f"Cannot create {what}: {e.strerror}{hint}", ECode.ENVIRON) from e
        raw_name, _ = _IFREQ.unpack(res)
        ifname = raw_name.split(b"\0", 1)[0].decode()
    except BaseException:
        os.close(fd)
        raise
    return Tap(fd=fd, name=ifname, vnet_hdr=with_vnet_hdr, multi_queue=multi_queue)
