"""Which tap belongs to which NIC of a running instance (runtime files).

Layer: driver (standard library and ``corral.errors`` only). Layout, as in
Ganeti's ifdown design (``<base>`` is ``paths.hv_run_dir("kvm") / "nic"``)::

    <base>/<instance>/<nic uuid>   file holding the tap name
    <base>/<instance>/<index>      relative symlink to <nic uuid> (compatibility)

The UUID file is the truth: NIC indexes shift when NICs are removed without
hotplug, so ``kvm-ifdown`` on hot-remove must find the tap by UUID. The index
link is kept for external tools written for Ganeti's ``nic/<inst>/<seq>``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ECode, HypervisorError


@dataclass(frozen=True)
class TapFile:
    """One recorded NIC: its UUID, its tap, and the index link if present."""

    uuid: str
    tap: str
    index: int | None


def _component(kind: str, value: str) -> str:
    # Instance names and UUIDs become path components: refuse anything that
    # could escape <base> or collide with the index links.
    if not value or value.startswith(".") or "/" in value or "\0" in value:
        raise HypervisorError(f"Invalid {kind} {value!r} for a NIC runtime file", ECode.INVAL)
    return value


def instance_dir(base: Path, instance: str) -> Path:
    return base / _component("instance name", instance)


def write_tap(base: Path, instance: str, nic_uuid: str, index: int, tap: str) -> None:
    """Record ``tap`` for the NIC (atomically), and point ``<index>`` at it.

    An index link left by another NIC (indexes shift) is replaced: the newest
    NIC at an index owns it.
    """
    if nic_uuid.isdigit():  # would collide with the index links
        raise HypervisorError(f"Invalid NIC UUID {nic_uuid!r}", ECode.INVAL)
    name = _component("NIC UUID", nic_uuid)
    d = instance_dir(base, instance)
    d.mkdir(parents=True, exist_ok=True)
    target = d / name
    tmp = d / f".{nic_uuid}.tmp"
    with open(tmp, "w") as f:
        f.write(tap + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    link_tmp = d / f".{index}.link.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(nic_uuid, link_tmp)
    os.replace(link_tmp, d / str(index))


def read_tap(base: Path, instance: str, nic_uuid: str) -> str | None:
    """The tap recorded for a NIC, or ``None`` if there is no record."""
    try:
        text = (instance_dir(base, instance) / _component("NIC UUID", nic_uuid)).read_text()
    except FileNotFoundError:
        return None
    return text.strip() or None


def list_taps(base: Path, instance: str) -> list[TapFile]:
    """Every NIC recorded for an instance, by UUID, sorted by index (unknown last)."""
    d = instance_dir(base, instance)
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return []
    index_of: dict[str, int] = {}
    for e in entries:
        if e.name.isdigit() and e.is_symlink():
            index_of.setdefault(os.readlink(e.path), int(e.name))
    result = []
    for e in entries:
        if e.name.startswith(".") or e.name.isdigit() or not e.is_file(follow_symlinks=False):
            continue
        tap = Path(e.path).read_text().strip()
        if tap:
            result.append(TapFile(uuid=e.name, tap=tap, index=index_of.get(e.name)))
    result.sort(key=lambda t: (t.index is None, t.index or 0, t.uuid))
    return result


@dataclass(frozen=True)
class TapOwner:
    """A NIC whose record names a given tap."""

    instance: str
    uuid: str


def owners(base: Path | str, tap: str) -> list[TapOwner]:
    """Every NIC recorded on this node (any instance) whose tap file names ``tap``.

    ``kvm-ifdown`` asks this before touching a tap that still exists: the
    kernel reuses ``tapN`` names, so a tap recorded for a NIC that is gone may
    by now serve another instance's NIC, whose record then names it too.
    """
    found: list[TapOwner] = []
    try:
        instances = [e for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return found
    for inst in instances:
        if inst.name.startswith("."):
            continue
        try:
            entries = list(os.scandir(inst.path))
        except FileNotFoundError:  # removed meanwhile
            continue
        for e in entries:
            if e.name.startswith(".") or e.name.isdigit() or not e.is_file(follow_symlinks=False):
                continue
            try:
                with open(e.path) as f:
                    recorded = f.read().strip()
            except FileNotFoundError:
                continue
            if recorded == tap:
                found.append(TapOwner(instance=inst.name, uuid=e.name))
    return found


def instances(base: Path) -> list[str]:
    """Instances that have a NIC directory under ``base``."""
    try:
        return sorted(
            e.name
            for e in os.scandir(base)
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
        )
    except FileNotFoundError:
        return []


def remove_tap(base: Path, instance: str, nic_uuid: str) -> None:
    """Forget one NIC: its UUID file and any index link pointing at it."""
    d = instance_dir(base, instance)
    name = _component("NIC UUID", nic_uuid)
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name.isdigit() and e.is_symlink() and os.readlink(e.path) == name:
            Path(e.path).unlink(missing_ok=True)
    (d / name).unlink(missing_ok=True)


def remove_instance(base: Path, instance: str) -> None:
    """Forget every NIC of an instance (after shutdown or migration away)."""
    shutil.rmtree(instance_dir(base, instance), ignore_errors=True)
