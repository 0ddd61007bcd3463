"""KVM hypervisor parameters, declared once (names and meanings as Ganeti's).

Layer: declarations. The master checks syntax with these types and checks
(:data:`KVM_PARAMS`); the node re-validates what depends on the node itself
(files, binaries, users) in :mod:`corral.hypervisor.kvm.verify`.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

import msgspec

from corral.params import ParamGroup

MIGRATION_CAPS = (
    "xbzrle",
    "auto-converge",
    "postcopy-ram",
    "multifd",
    "return-path",
    "zero-blocks",
    "compress",
    "events",
)


def _abs_path(optional: bool) -> object:
    def check(v: str) -> str | None:
        if not v:
            return None if optional else "a path is required"
        if not os.path.isabs(v):
            return f"{v!r} is not an absolute path"
        if "\0" in v or "\n" in v:
            return "invalid character in path"
        return None

    return check


def _check_kernel_args(v: str) -> str | None:
    if "\n" in v or "\0" in v:
        return "kernel arguments must be one line"
    return None


def _check_vnc_bind(v: str) -> str | None:
    if not v or v.startswith("/"):
        return None  # "" disables VNC; a path means a UNIX socket
    if re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:]+|[A-Za-z0-9.-]+", v) is None:
        return f"{v!r} is neither an IP address, a host name nor an absolute path"
    return None


def _check_caps(v: str) -> str | None:
    for cap in filter(None, v.split(":")):
        if cap not in MIGRATION_CAPS:
            return f"unknown migration capability {cap!r}; known: {', '.join(MIGRATION_CAPS)}"
    return None


def _check_machine(v: str) -> str | None:
    if v and re.fullmatch(r"[A-Za-z0-9_.-]+", v) is None:
        return f"invalid machine type {v!r}"
    return None


def _check_user(v: str) -> str | None:
    if v and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]+", v) is None:
        return f"invalid user name {v!r}"
    return None


def _check_cpu(v: str) -> str | None:
    if v and re.fullmatch(r"[A-Za-z0-9_.,=+-]+", v) is None:
        return f"invalid CPU model {v!r}"
    return None


def _meta(doc: str, check: object = None, **kw: object) -> msgspec.Meta:
    extra = {"check": check} if check is not None else None
    meta: msgspec.Meta = msgspec.Meta(description=doc, extra=extra, **kw)  # type: ignore[call-overload]
    return meta


class KvmHvParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The KVM hypervisor parameters Corral implements (Ganeti's names)."""

    kvm_path: Annotated[str, _meta("QEMU binary", _abs_path(False))] = "/usr/bin/kvm"
    kvm_flag: Annotated[
        Literal["", "enabled", "disabled"],
        _meta(
            "Accelerator: enabled = KVM, disabled = TCG (emulation), empty = KVM "
            "where the CPU has hardware virtualization and /dev/kvm opens, else TCG"
        ),
    ] = ""
    machine_version: Annotated[
        str, _meta("Machine type; empty = QEMU's default 'pc', pinned at start", _check_machine)
    ] = ""
    cpu_type: Annotated[str, _meta("CPU model (-cpu); empty = QEMU's default", _check_cpu)] = ""
    kernel_path: Annotated[
        str, _meta("Kernel to boot directly (empty: boot from disk)", _abs_path(True))
    ] = ""
    initrd_path: Annotated[str, _meta("Initial ramdisk for kernel_path", _abs_path(True))] = ""
    kernel_args: Annotated[
        str, _meta("Kernel command line (with kernel_path)", _check_kernel_args)
    ] = "ro"
    root_path: Annotated[
        str, _meta("Root device passed as root= (with kernel_path); empty: none")
    ] = "/dev/vda1"
    boot_order: Annotated[
        Literal["disk", "cdrom", "network", "floppy"], _meta("Boot device (without kernel_path)")
    ] = "disk"
    acpi: Annotated[bool, _meta("Give the guest ACPI (needed for soft shutdown)")] = True
    nic_type: Annotated[
        Literal[
            "paravirtual",
            "e1000",
            "rtl8139",
            "i82551",
            "i82557b",
            "i82559er",
            "ne2k_pci",
            "pcnet",
        ],
        _meta("NIC model; paravirtual = virtio-net-pci"),
    ] = "paravirtual"
    disk_type: Annotated[
        Literal["paravirtual", "ide", "scsi-hd"],
        _meta("Disk model; paravirtual = virtio-blk-pci"),
    ] = "paravirtual"
    disk_cache: Annotated[
        Literal["default", "none", "writethrough", "writeback"], _meta("Host cache mode of disks")
    ] = "default"
    disk_aio: Annotated[Literal["threads", "native"], _meta("Disk AIO backend")] = "threads"
    disk_discard: Annotated[Literal["ignore", "unmap"], _meta("Pass discards to the image")] = (
        "ignore"
    )
    kvm_scsi_controller_type: Annotated[
        Literal["lsi", "virtio-scsi-pci", "megasas"], _meta("SCSI controller for scsi-hd disks")
    ] = "lsi"
    vhost_net: Annotated[bool, _meta("Use vhost-net for paravirtual NICs")] = False
    vnet_hdr: Annotated[bool, _meta("Open taps with IFF_VNET_HDR (offloads)")] = True
    kvm_pci_reservations: Annotated[
        int, _meta("PCI slots reserved for QEMU's own devices (slots 0..n-1)", ge=5, le=31)
    ] = 12
    serial_console: Annotated[bool, _meta("Give the guest a serial console (ttyS0)")] = True
    serial_speed: Annotated[int, _meta("Serial console speed (baud)", ge=300, le=115200)] = 38400
    vnc_bind_address: Annotated[
        str,
        _meta(
            "VNC listen address (IP, or a path for a UNIX socket); empty: no VNC", _check_vnc_bind
        ),
    ] = ""
    vnc_password_file: Annotated[
        str, _meta("File whose first line is the VNC password", _abs_path(True))
    ] = ""
    vga: Annotated[
        Literal["", "std", "cirrus", "virtio", "none"],
        _meta("Graphics card; empty: std when VNC is on, none otherwise"),
    ] = ""
    keymap: Annotated[str, _meta("VNC keyboard layout (-k)")] = ""
    use_localtime: Annotated[bool, _meta("Guest RTC in local time instead of UTC")] = False
    security_model: Annotated[
        Literal["none", "user"],
        _meta("Run QEMU as root (none) or as the user in security_domain (user)"),
    ] = "none"
    security_domain: Annotated[
        str, _meta("User QEMU runs as with security_model=user", _check_user)
    ] = ""
    use_chroot: Annotated[bool, _meta("Chroot QEMU into an empty per-instance directory")] = False
    reboot_behavior: Annotated[
        Literal["allow", "exit"], _meta("A reboot inside the guest: allow it, or stop the instance")
    ] = "allow"
    migration_port: Annotated[int, _meta("TCP port for incoming migrations", ge=1, le=65535)] = 8102
    migration_bandwidth: Annotated[
        int, _meta("Migration bandwidth limit (MiB/s)", ge=1, le=1 << 20)
    ] = 32
    migration_downtime: Annotated[
        int, _meta("Maximum migration downtime (ms)", ge=1, le=1 << 20)
    ] = 30
    migration_mode: Annotated[Literal["live", "non-live"], _meta("Default migration mode")] = "live"
    migration_caps: Annotated[
        str, _meta("Migration capabilities, ':'-separated (e.g. xbzrle:auto-converge)", _check_caps)
    ] = ""
    kvm_extra: Annotated[str, _meta("Extra QEMU arguments (split on spaces); use with care")] = ""


KVM_PARAMS: ParamGroup[KvmHvParams] = ParamGroup("hv/kvm", KvmHvParams)
