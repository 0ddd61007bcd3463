"""The QEMU command line, built by pure functions from a :class:`Machine`.

Layer: pure builder (no I/O). :func:`base_argv` is what the runtime file
keeps as ``kvm_cmd`` (Ganeti's split: no devices, no QMP socket, no
``-S``/``-incoming``); :func:`exec_argv` adds what only exists at exec time
(file descriptors, sockets). Disks and taps are always file descriptors the
node daemon opened, so QEMU never opens a path it could be denied.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm.model import SLOT_BALLOON, SLOT_SCSI, SLOT_VGA, Machine

_BOOT = {"disk": "c", "cdrom": "d", "network": "n", "floppy": "a"}


@dataclass(frozen=True)
class NicFds:
    """A tap the node daemon opened, as QEMU will inherit it."""

    fd: int
    vnet_hdr: bool = True
    vhost_fd: int | None = None


@dataclass(frozen=True)
class DiskFd:
    """A disk image the node daemon opened, put in its own fd set."""

    fd: int
    fdset: int


def vnc_argument(m: Machine) -> str | None:
    bind = m.hv.vnc_bind_address
    if not bind:
        return None
    if bind.startswith("/"):
        arg = f"unix:{bind}"
    else:
        if m.network_port is None or not 5900 <= m.network_port < 5900 + 65536:
            raise HypervisorError(
                f"instance {m.name} has no usable network port for VNC ({m.network_port})",
                ECode.STATE,
            )
        host = bind
        try:
            if ipaddress.ip_address(bind).version == 6:
                host = f"[{bind}]"
        except ValueError:
            pass  # a host name
        arg = f"{host}:{m.network_port - 5900}"
    if m.hv.vnc_password_file:
        arg += ",password=on"
    return arg


def kernel_append(m: Machine) -> str:
    parts: list[str] = []
    if m.hv.root_path:
        parts.append(f"root={m.hv.root_path}")
    if m.hv.kernel_args:
        parts.append(m.hv.kernel_args)
    if m.hv.serial_console:
        parts.append(f"console=ttyS0,{m.hv.serial_speed}")
    return " ".join(parts)


def base_argv(m: Machine) -> list[str]:
    hv = m.hv
    machine = f"{m.machine_type},accel={m.accel}"
    if not hv.acpi:
        machine += ",acpi=off"
    argv = [
        hv.kvm_path,
        "-name",
        m.name,
        "-uuid",
        m.uuid,
        "-m",
        str(m.memory),
        "-smp",
        str(m.vcpus),
        "-machine",
        machine,
        "-nodefaults",
        "-no-user-config",
        "-pidfile",
        m.ctl.pidfile,
        "-daemonize",
        "-D",
        m.ctl.qemu_log,
        # -no-shutdown: a guest power-off leaves QEMU paused in "shutdown" so the
        # node daemon sees who shut it down (user shutdown) and cleans up itself.
        "-no-shutdown",
    ]
    if hv.reboot_behavior == "exit":
        argv.append("-no-reboot")
    if hv.cpu_type:
        argv += ["-cpu", hv.cpu_type]
    if hv.use_localtime:
        argv += ["-rtc", "base=localtime"]
    argv += ["-device", f"virtio-balloon-pci,id=balloon,bus=pci.0,addr={hex(SLOT_BALLOON)}"]
    argv += ["-monitor", f"unix:{m.ctl.monitor},server=on,wait=off"]
    if hv.serial_console:
        argv += [
            "-chardev",
            f"socket,id=serial0,path={m.ctl.serial},server=on,wait=off,"
            f"logfile={m.ctl.serial_log},logappend=on",
            "-serial",
            "chardev:serial0",
        ]
    vnc = vnc_argument(m)
    vga = hv.vga or ("std" if vnc else "none")
    if vga != "none":
        driver = {"std": "VGA", "cirrus": "cirrus-vga", "virtio": "virtio-vga"}[vga]
        argv += ["-device", f"{driver},id=vga,bus=pci.0,addr={hex(SLOT_VGA)}"]
    if vnc:
        argv += ["-vnc", vnc]
        if hv.keymap:
            argv += ["-k", hv.keymap]
    else:
        argv += ["-display", "none"]
    if any(d.hvinfo.bus == "scsi.0" for d in m.disks):
        argv += [
            "-device",
            f"{hv.kvm_scsi_controller_type},id=scsi,bus=pci.0,addr={hex(SLOT_SCSI)}",
        ]
    if hv.kernel_path:
        argv += ["-kernel", hv.kernel_path]
        if hv.initrd_path:
            argv += ["-initrd", hv.initrd_path]
        argv += ["-append", kernel_append(m)]
    else:
        argv += ["-boot", f"order={_BOOT[hv.boot_order]}"]
    if m.runas:
        argv += ["-runas", m.runas]
    if hv.use_chroot:
        argv += ["-chroot", m.ctl.chroot]
    argv += list(m.extra)
    return argv


def _props(props: dict[str, str | int]) -> str:
    for k, v in props.items():
        if "," in str(v) or "," in k:
            raise HypervisorError(f"invalid device property {k}={v!r}", ECode.INVAL)
    driver = props.pop("driver")
    return ",".join([str(driver)] + [f"{k}={v}" for k, v in props.items()])


def blockdev_options(m: Machine, index: int, fdset: int) -> dict[str, object]:
    """``blockdev-add`` options of disk ``index`` (also used by ``-blockdev``)."""
    d = m.disks[index]
    hv = m.hv
    return {
        "driver": "raw",
        "node-name": d.hvinfo.id,
        "read-only": d.read_only,
        "discard": hv.disk_discard,
        "cache": {"direct": hv.disk_cache == "none", "no-flush": False},
        "file": {
            "driver": "file",
            "filename": f"/dev/fdset/{fdset}",
            "aio": hv.disk_aio,
        },
    }


def disk_device(m: Machine, index: int) -> dict[str, str | int]:
    d = m.disks[index]
    props = d.hvinfo.device_props()
    props["drive"] = d.hvinfo.id
    if d.serial:
        props["serial"] = d.serial
    if m.hv.disk_cache == "writethrough":
        props["write-cache"] = "off"
    return props


def nic_device(m: Machine, index: int) -> dict[str, str | int]:
    n = m.nics[index]
    props = n.hvinfo.device_props()
    props["netdev"] = n.hvinfo.id
    props["mac"] = n.mac
    if m.hv.use_chroot:
        props["romfile"] = ""  # no option ROM lookups inside the empty chroot
    return props


def netdev_options(m: Machine, index: int, fds: NicFds) -> str:
    n = m.nics[index]
    # No vnet_hdr= here: QEMU reads it off the tap fd (and refuses the option with fd=).
    opts = f"tap,id={n.hvinfo.id},fd={fds.fd}"
    if fds.vhost_fd is not None:
        opts += f",vhost=on,vhostfd={fds.vhost_fd}"
    return opts


def exec_argv(
    m: Machine,
    nic_fds: list[NicFds],
    disk_fds: list[DiskFd],
    *,
    paused: bool = False,
    incoming: str | None = None,
) -> list[str]:
    """The full argv: :func:`base_argv`, control socket, devices, start mode."""
    if len(nic_fds) != len(m.nics) or len(disk_fds) != len(m.disks):
        raise HypervisorError("internal error: devices and file descriptors differ", ECode.FAULT)
    argv = base_argv(m)
    argv += ["-qmp", f"unix:{m.ctl.qmp},server=on,wait=off"]
    for i, dfd in enumerate(disk_fds):
        d = m.disks[i]
        argv += ["-add-fd", f"fd={dfd.fd},set={dfd.fdset},opaque={d.hvinfo.id}"]
        argv += ["-blockdev", json.dumps(blockdev_options(m, i, dfd.fdset), separators=(",", ":"))]
        argv += ["-device", _props(disk_device(m, i))]
    for i, nfd in enumerate(nic_fds):
        argv += ["-netdev", netdev_options(m, i, nfd)]
        argv += ["-device", _props(nic_device(m, i))]
    if paused:
        argv.append("-S")
    if incoming:
        argv += ["-incoming", incoming]
    return argv
