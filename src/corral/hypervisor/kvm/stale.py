"""What dead KVM instances leave on a node, found and undone (the watcher, node side).

Layer: driver execution. ``kvm-ifdown`` cannot be relied on (Ganeti's ifdown
design): a QEMU killed with SIGKILL, a node daemon that was down when its VM
died, a node that crashed leave the runtime file, the tap files, the pid
file, sockets and — for routed NICs — ``ip rule iif <tap>`` entries behind.
The kernel drops a tap's routes and bridge port with the tap, not rules keyed
by an interface name, and those send the traffic of whichever NIC gets that
tap name next to the wrong table.

An instance is *dead* here when it has files under the run dir and no QEMU:
neither the pid file's process nor any process whose argv names its QMP
socket (a lost pid file must not get a running VM unwired). For each dead
instance :func:`clean` runs ``kvm-ifdown <tap> shutdown`` for every NIC of
its runtime file (the tap from its UUID file, as after a normal shutdown) and
removes its files. A user-shutdown marker is kept when the instance belongs
to this node: it is what makes the instance ``USER_down``, which the watcher
does not restart. The caller holds the instance's lock (a start writes the
runtime file and runs ``kvm-ifup`` before QEMU exists).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from corral.errors import HypervisorError
from corral.hypervisor.kvm import launch, runtime
from corral.hypervisor.kvm.files import KvmFiles
from corral.network import nicfiles
from corral.rpc.types import CleanedInstance

log = logging.getLogger(__name__)

SOCKETS = (".qmp", ".monitor", ".serial")
MARKER = ".shutdown"


def candidates(files: KvmFiles) -> list[str]:
    """Every instance name that has some file or directory under the run dir."""
    names: set[str] = set()

    def listing(d: Path) -> list[str]:
        try:
            return [n for n in os.listdir(d) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    names.update(listing(files.pid_dir))
    names.update(n[: -len(".runtime")] for n in listing(files.conf_dir) if n.endswith(".runtime"))
    for n in listing(files.ctrl_dir):
        for suffix in (*SOCKETS, MARKER):
            if n.endswith(suffix) and len(n) > len(suffix):
                names.add(n[: -len(suffix)])
    names.update(nicfiles.instances(files.nic_dir))
    names.update(n for n in listing(files.chroot_dir) if (files.chroot_dir / n).is_dir())
    return sorted(names)


def leftovers(files: KvmFiles, name: str, *, keep_marker: bool) -> list[Path]:
    """The files and directories of ``name`` that exist (the marker only if not kept)."""
    paths = [
        files.pidfile(name),
        files.runtime(name),
        *(files.ctrl_dir / f"{name}{s}" for s in SOCKETS),
        files.nic_dir / name,
        files.chroot_dir / name,
    ]
    if not keep_marker:
        paths.append(files.shutdown_marker(name))
    return [p for p in paths if os.path.lexists(p)]


def qemu_alive(files: KvmFiles, name: str) -> bool:
    """Whether some process's argv names this instance's QMP socket (pid file or not)."""
    qmp = str(files.ctrl_dir / f"{name}.qmp").encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(qmp in a for a in argv):
            return True
    return False


def is_dead(files: KvmFiles, name: str) -> bool:
    return launch.pid_of(files, name) is None and not qemu_alive(files, name)


def _remove(path: Path, files: KvmFiles) -> None:
    if path.parent == files.nic_dir:
        shutil.rmtree(path)
    elif path.parent == files.chroot_dir:
        os.rmdir(path)  # empty by construction; never rmtree a chroot
    else:
        path.unlink()


async def clean(files: KvmFiles, name: str, *, keep_marker: bool) -> CleanedInstance | None:
    """Unwire and remove what dead instance ``name`` left; ``None``: nothing was left.

    Never raises for what it finds: a failed ``kvm-ifdown``, a NIC record the
    runtime file does not describe (no data to run ``kvm-ifdown`` with), an
    unreadable runtime file or a file that cannot be removed is reported in
    :attr:`CleanedInstance.errors`.
    """
    found = leftovers(files, name, keep_marker=keep_marker)
    if not found:
        return None
    errors: list[str] = []
    try:
        rt = runtime.load(files.runtime(name))
    except HypervisorError as err:
        errors.append(err.message)
        rt = None
    known = {n.uuid for n in rt.nics} if rt is not None else set()
    for rec in nicfiles.list_taps(files.nic_dir, name):
        if rec.uuid not in known:
            errors.append(
                f"NIC {rec.uuid} (tap {rec.tap}) is not in the runtime file: kvm-ifdown not run"
            )
    unwired = await launch.deconfigure(rt, files, name, "shutdown")
    errors += [f"kvm-ifdown {u.tap}: {u.result.describe()}" for u in unwired if not u.result.ok]
    removed: list[str] = []
    for path in found:
        rel = str(path.relative_to(files.base))
        try:
            _remove(path, files)
        except FileNotFoundError:
            pass
        except OSError as err:
            errors.append(f"cannot remove {rel}: {err.strerror}")
            continue
        removed.append(rel)
    result = CleanedInstance(
        name=name,
        hypervisor="kvm",
        taps=[u.tap for u in unwired],
        files=removed,
        errors=errors,
        marker_kept=keep_marker and files.shutdown_marker(name).exists(),
    )
    log.info(
        "cleaned up after dead instance %s: kvm-ifdown for %s, removed %s%s",
        name,
        ", ".join(result.taps) or "no NIC",
        ", ".join(removed) or "nothing",
        f"; problems: {'; '.join(errors)}" if errors else "",
    )
    return result
