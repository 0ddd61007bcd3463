"""The test guest: a tiny real Linux VM that reports its devices on the console.

Layer: testing support (imports ``errors``; runs apt/dpkg-deb/lz4 at build
time only). Corral's KVM system tests, demo and benchmark boot it with::

    img = corral.testguest.build()          # cached after the first call
    qemu-system-x86_64 -kernel img.kernel -initrd img.initrd \\
        -append corral.testguest.kernel_cmdline({mac: "203.0.113.10/24"})

and read its serial console with :func:`parse_line`. Modules:
``cpio`` (newc writer), ``elf`` (modinfo, PVH note), ``kernel`` (package,
vmlinux, modules), ``initscript`` (``/init``), ``console`` (command line and
console line formats), ``builder`` (orchestration and cache).
"""

from __future__ import annotations

from corral.testguest.builder import CACHE_ENV, DEFAULT_CACHE, build, cached, resolve_cache_dir
from corral.testguest.console import (
    AddrLine,
    BlockDev,
    BootLine,
    ConsoleLine,
    DevicesLine,
    NetDev,
    PowerOffLine,
    kernel_cmdline,
    parse_line,
)
from corral.testguest.model import GuestError, GuestImage

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE",
    "AddrLine",
    "BlockDev",
    "BootLine",
    "ConsoleLine",
    "DevicesLine",
    "GuestError",
    "GuestImage",
    "NetDev",
    "PowerOffLine",
    "build",
    "cached",
    "kernel_cmdline",
    "parse_line",
    "resolve_cache_dir",
]
