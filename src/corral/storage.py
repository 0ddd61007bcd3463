"""File-backed disk storage (templates ``file`` and ``sharedfile``).

Layer: driver (node side). Images are raw files; they are created when a
disk is created and deleted only by :func:`remove`, which the master calls
only when the user removed the disk or the instance.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import NamedTuple

from corral.errors import ECode, HypervisorError
from corral.rpc.types import DiskSpec

FILE_TEMPLATES = ("file", "sharedfile")
QEMU_IMG = "/usr/bin/qemu-img"


class FsUsage(NamedTuple):
    total: int  # MiB
    free: int


def fs_usage(path: os.PathLike[str] | str) -> FsUsage:
    """Size and free space of the filesystem holding ``path`` (or its nearest parent)."""
    p = os.fspath(path)
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    try:
        st = os.statvfs(p or "/")
    except OSError:
        return FsUsage(0, 0)
    return FsUsage(st.f_blocks * st.f_frsize >> 20, st.f_bavail * st.f_frsize >> 20)


def _create_sync(disk: DiskSpec) -> None:
    if disk.dev_type not in FILE_TEMPLATES:
        raise HypervisorError(f"cannot create disks of type {disk.dev_type!r}", ECode.INVAL)
    if not disk.path:
        raise HypervisorError(f"disk {disk.uuid} has no path", ECode.INVAL)
    # Check the space first (fs_usage looks at the nearest existing parent), so a
    # refused disk leaves no empty instance directory behind.
    if fs_usage(os.path.dirname(disk.path)).free < disk.size:
        raise HypervisorError(
            f"not enough space for a {disk.size} MiB disk in {os.path.dirname(disk.path)}",
            ECode.NORES,
        )
    os.makedirs(os.path.dirname(disk.path), exist_ok=True)
    # O_EXCL: never truncate an image that already exists (it may hold data).
    try:
        fd = os.open(disk.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise HypervisorError(f"disk image {disk.path} already exists", ECode.EXISTS) from None
    os.close(fd)
    # The O_EXCL open above claimed the name; qemu-img writes the raw image
    # into that (empty, ours) file.
    prealloc = "falloc" if disk.params.get("preallocate") else "off"
    argv = [QEMU_IMG, "create", "-q", "-f", "raw", "-o", f"preallocation={prealloc}"]
    argv += [disk.path, f"{disk.size}M"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        problem = proc.stderr.strip() if proc.returncode != 0 else None
    except (OSError, subprocess.TimeoutExpired) as err:
        problem = str(err)
    if problem is not None:
        os.unlink(disk.path)
        try:
            os.rmdir(os.path.dirname(disk.path))
        except OSError:
            pass  # other disks of the instance are there
        raise HypervisorError(f"cannot create {disk.path}: {problem}", ECode.ENVIRON)


async def create(disk: DiskSpec) -> None:
    await asyncio.to_thread(_create_sync, disk)


def _remove_sync(disk: DiskSpec) -> None:
    if disk.dev_type not in FILE_TEMPLATES or not disk.path:
        return
    try:
        os.unlink(disk.path)
    except FileNotFoundError:
        return
    try:
        os.rmdir(os.path.dirname(disk.path))
    except OSError:
        pass  # other disks of the instance are still there


async def remove(disk: DiskSpec) -> None:
    await asyncio.to_thread(_remove_sync, disk)


def _grow_sync(disk: DiskSpec, new_size: int) -> int:
    if disk.dev_type not in FILE_TEMPLATES or not disk.path:
        raise HypervisorError(f"cannot grow disks of type {disk.dev_type!r}", ECode.INVAL)
    try:
        current = os.stat(disk.path).st_size
    except FileNotFoundError:
        raise HypervisorError(f"disk image {disk.path} is missing", ECode.NOENT) from None
    wanted = new_size << 20
    if wanted < current:
        # Never shrink: the guest's filesystem may use the end of the disk.
        raise HypervisorError(
            f"disk image {disk.path} is {current >> 20} MiB, larger than {new_size} MiB; "
            "disks are never shrunk",
            ECode.INVAL,
        )
    if wanted == current:
        return new_size
    if fs_usage(os.path.dirname(disk.path)).free < (wanted - current) >> 20:
        raise HypervisorError(
            f"not enough space to grow {disk.path} by {(wanted - current) >> 20} MiB", ECode.NORES
        )
    with open(disk.path, "r+b") as f:
        if disk.params.get("preallocate"):
            os.posix_fallocate(f.fileno(), current, wanted - current)
        os.ftruncate(f.fileno(), wanted)
        os.fsync(f.fileno())
    return new_size


async def grow(disk: DiskSpec, new_size: int) -> int:
    """Grow a file disk to ``new_size`` MiB (never shrinks); returns the new size."""
    return await asyncio.to_thread(_grow_sync, disk, new_size)
