"""Where a KVM instance's runtime state lives on its node (Ganeti's layout).

Layer: driver. ``<run>/kvm-hypervisor/{pid,ctrl,conf,nic,chroot}/`` as in
Ganeti's ``/var/run/ganeti/kvm-hypervisor``; logs in ``<log>/kvm/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm.model import ControlPaths
from corral.paths import Paths

# AF_UNIX paths are limited to 107 bytes (sun_path is 108 with the NUL).
_SUN_PATH_MAX = 107


class KvmFiles:
    def __init__(self, paths: Paths) -> None:
        self.base = paths.hv_run_dir("kvm")
        self.log_dir = paths.log_dir / "kvm"
        self.pid_dir = self.base / "pid"
        self.ctrl_dir = self.base / "ctrl"
        self.conf_dir = self.base / "conf"
        self.nic_dir = self.base / "nic"
        self.chroot_dir = self.base / "chroot"

    def ensure(self) -> None:
        for d in (self.pid_dir, self.ctrl_dir, self.conf_dir, self.nic_dir, self.chroot_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def check_name(name: str) -> None:
        if not name or "/" in name or name.startswith(".") or "\0" in name or "," in name:
            raise HypervisorError(f"invalid instance name {name!r}", ECode.INVAL)

    def pidfile(self, name: str) -> Path:
        return self.pid_dir / name

    def runtime(self, name: str) -> Path:
        return self.conf_dir / f"{name}.runtime"

    def shutdown_marker(self, name: str) -> Path:
        """Written when the guest powered itself off (Ganeti's ``ctrl/<name>.shutdown``)."""
        return self.ctrl_dir / f"{name}.shutdown"

    def serial_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.console.log"

    def control(self, name: str) -> ControlPaths:
        self.check_name(name)
        ctl = ControlPaths(
            pidfile=str(self.pidfile(name)),
            qmp=str(self.ctrl_dir / f"{name}.qmp"),
            monitor=str(self.ctrl_dir / f"{name}.monitor"),
            serial=str(self.ctrl_dir / f"{name}.serial"),
            serial_log=str(self.serial_log(name)),
            qemu_log=str(self.log_dir / f"{name}.log"),
            chroot=str(self.chroot_dir / name),
        )
        for sock in (ctl.qmp, ctl.monitor, ctl.serial):
            if len(sock.encode()) > _SUN_PATH_MAX:
                raise HypervisorError(
                    f"control socket path too long for a UNIX socket ({len(sock)} bytes): "
                    f"{sock}; use a shorter instance name or root prefix",
                    ECode.INVAL,
                )
        return ctl

    def instance_names(self) -> list[str]:
        """Instances with a pid file or a user-shutdown marker on this node."""
        names: set[str] = set()
        try:
            names.update(n for n in os.listdir(self.pid_dir) if not n.startswith("."))
        except FileNotFoundError:
            pass
        try:
            names.update(
                n[: -len(".shutdown")] for n in os.listdir(self.ctrl_dir) if n.endswith(".shutdown")
            )
        except FileNotFoundError:
            pass
        return sorted(names)

    def remove_all(self, name: str, keep_marker: bool = False) -> None:
        """Drop everything a stopped instance leaves behind (logs stay)."""
        ctl = self.control(name)
        for p in (ctl.pidfile, ctl.qmp, ctl.monitor, ctl.serial, str(self.runtime(name))):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        if not keep_marker:
            try:
                os.unlink(self.shutdown_marker(name))
            except FileNotFoundError:
                pass
        shutil.rmtree(self.nic_dir / name, ignore_errors=True)
        try:
            os.rmdir(ctl.chroot)  # empty by construction; never rmtree a chroot
        except OSError:
            pass
