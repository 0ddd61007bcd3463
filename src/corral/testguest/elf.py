"""Just enough ELF64 reading for the test guest build.

Layer: pure (standard library only). Three questions are answered from the
bytes, without binutils or kmod: what a kernel module's ``.modinfo`` says
(the Debian package ships no ``modules.dep``), whether an uncompressed
``vmlinux`` carries the PVH entry note (so QEMU can boot it directly), and
whether a binary is statically linked (the initramfs has no libc).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_INTERP = 3
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU's -kernel looks for


class ElfError(ValueError):
    """The bytes are not a little-endian ELF64 image, or are truncated."""


@dataclass(frozen=True)
class _Section:
    name: str
    offset: int
    size: int


def _check(data: bytes) -> None:
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("not a little-endian 64-bit ELF file")


def _sections(data: bytes) -> list[_Section]:
    _check(data)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise ElfError("truncated section header table")
    raw = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx][4]
    out = []
    for name_off, _type, _flags, _addr, offset, size in raw:
        start = strtab + name_off
        name = data[start : data.index(b"\0", start)].decode(errors="replace")
        out.append(_Section(name, offset, size))
    return out


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(type, offset, filesz)`` of every program header."""
    _check(data)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phoff + phnum * phentsize > len(data):
        raise ElfError("truncated program header table")
    out = []
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        out.append((p_type, offset, filesz))
    return out


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``key=value`` strings of a kernel module's ``.modinfo`` section.

    Keys may repeat (``alias``), so every key maps to a list. Raises
    :class:`ElfError` if there is no such section.
    """
    for sec in _sections(data):
        if sec.name == ".modinfo":
            info: dict[str, list[str]] = {}
            for item in data[sec.offset : sec.offset + sec.size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    raise ElfError("no .modinfo section (not a kernel module?)")


def notes(data: bytes) -> list[tuple[str, int, bytes]]:
    """``(owner, type, descriptor)`` of every note in the PT_NOTE segments."""
    out = []
    for p_type, offset, size in _segments(data):
        if p_type != PT_NOTE:
            continue
        pos, end = offset, offset + size
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", data, pos)
            name_start = pos + 12
            desc_start = name_start + namesz + (-namesz % 4)
            owner = data[name_start : name_start + namesz].rstrip(b"\0").decode(errors="replace")
            out.append((owner, n_type, data[desc_start : desc_start + descsz]))
            pos = desc_start + descsz + (-descsz % 4)
    return out


def has_pvh_entry(data: bytes) -> bool:
    """True if the image has Xen's PHYS32_ENTRY note, i.e. boots as PVH."""
    return any(o == "Xen" and t == XEN_ELFNOTE_PHYS32_ENTRY for o, t, _d in notes(data))


def is_static(data: bytes) -> bool:
    """True if the executable asks for no program interpreter (no ld.so)."""
    return all(p_type != PT_INTERP for p_type, _o, _s in _segments(data))
