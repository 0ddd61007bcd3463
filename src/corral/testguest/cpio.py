"""A reproducible ``newc`` cpio writer (and reader) for initramfs images.

Layer: pure (standard library only). The kernel unpacks an initramfs in the
"new ASCII" (``070701``) format. Writing it here instead of calling GNU
``cpio`` needs no extra package and no root (device nodes are just header
fields), and the output depends only on the entries: owner 0:0, mtime 0,
entries sorted by name, inode numbers assigned in that order, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_HEADER_LEN = 110  # 6 magic + 13 fields of 8 hex digits


class CpioFormatError(ValueError):
    """An archive handed to :func:`read_newc` is not valid newc."""


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``name`` is relative (no leading ``/``).

    ``mode`` carries the file type bits (``stat.S_IFREG | 0o755`` …);
    ``data`` is the file content, or the target of a symlink; ``rdev`` is
    ``(major, minor)`` of a character or block device.
    """

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @staticmethod
    def directory(name: str, perm: int = 0o755) -> CpioEntry:
        return CpioEntry(name, stat.S_IFDIR | perm)

    @staticmethod
    def file(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
        return CpioEntry(name, stat.S_IFREG | perm, data)

    @staticmethod
    def symlink(name: str, target: str) -> CpioEntry:
        return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
        return CpioEntry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"cpio member name must be a normalized relative path: {name!r}")


def _header(ino: int, entry: CpioEntry, nlink: int, namesize: int) -> bytes:
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        0,  # mtime
        len(entry.data),
        0,  # devmajor: the archive's own device, meaningless here
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        namesize,
        0,  # check: always 0 in newc (070702 would carry a checksum)
    )
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def _record(ino: int, entry: CpioEntry, nlink: int) -> bytes:
    name = entry.name.encode() + b"\0"
    head = _header(ino, entry, nlink, len(name)) + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def with_parents(entries: Iterable[CpioEntry]) -> list[CpioEntry]:
    """Add a ``0o755`` directory entry for every missing parent directory."""
    given = {e.name: e for e in entries}
    for name in list(given):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            given.setdefault(parent, CpioEntry.directory(parent))
    return list(given.values())


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """The newc archive of ``entries`` (plus missing parent directories).

    Raises ``ValueError`` on a bad or duplicated name. Sorting by name puts
    every directory before its contents, which the kernel's unpacker needs.
    """
    items = list(entries)
    names = [e.name for e in items]
    for name in names:
        _check_name(name)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate cpio member names: {', '.join(dup)}")
    out = bytearray()
    for ino, entry in enumerate(sorted(with_parents(items), key=lambda e: e.name), start=1):
        if stat.S_ISDIR(entry.mode) and entry.data:
            raise ValueError(f"directory {entry.name!r} cannot carry data")
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _record(ino, entry, nlink)
    out += _record(0, CpioEntry(TRAILER, 0), 1)
    return bytes(out)


def read_newc(data: bytes) -> list[CpioEntry]:
    """Parse a newc archive back into entries (up to the trailer).

    Raises :class:`CpioFormatError` if the bytes are not a newc archive.
    """
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos : pos + 6] != MAGIC or len(data) < pos + _HEADER_LEN:
            raise CpioFormatError(f"no newc header at offset {pos}")
        try:
            f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise CpioFormatError(f"bad header field at offset {pos}") from exc
        mode, filesize, rmajor, rminor, namesize = f[1], f[6], f[9], f[10], f[11]
        name_end = pos + _HEADER_LEN + namesize
        if namesize < 1 or name_end > len(data) or data[name_end - 1] != 0:
            raise CpioFormatError(f"bad name at offset {pos}")
        name = data[pos + _HEADER_LEN : name_end - 1].decode()
        start = name_end + (-name_end % 4)
        end = start + filesize
        if end > len(data):
            raise CpioFormatError(f"member {name!r} is truncated")
        if name == TRAILER:
            return entries
        entries.append(CpioEntry(name, mode, bytes(data[start:end]), (rmajor, rminor)))
        pos = end + (-end % 4)
