"""Records and the error of the test guest build.

Layer: bottom of :mod:`corral.testguest` (imports ``errors`` only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError, ECode


class GuestError(CorralError):
    """The test guest cannot be built here (missing package, no kernel, …) or
    was asked for something malformed (code INVAL)."""

    default_code = ECode.ENVIRON


@dataclass(frozen=True)
class GuestImage:
    """A built test guest: boot it with ``-kernel kernel -initrd initrd``.

    ``kernel`` is an uncompressed ELF ``vmlinux`` with a PVH entry note, so
    QEMU jumps straight into it (no in-guest decompression).
    """

    kernel: Path
    initrd: Path
    kernel_version: str

    def enable_kvm_argv(self, kernel_args: str = "quiet", **hv: str) -> list[str]:
        """``gnt-cluster modify`` that boots this guest on KVM instances, under TCG.

        TCG (``kvm_flag=disabled``): ``/dev/kvm`` on the development machines
        cannot boot Linux (TESTGUEST.md). ``hv`` adds more KVM parameters.
        """
        params = {
            "kernel_path": str(self.kernel),
            "initrd_path": str(self.initrd),
            "root_path": "",
            "kernel_args": kernel_args,
            "kvm_flag": "disabled",
            **hv,
        }
        joined = ",".join(f"{k}={v}" for k, v in params.items())
        return ["gnt-cluster", "modify", "--enabled-hypervisors=kvm,fake", "-H", f"kvm:{joined}"]


@dataclass(frozen=True)
class Module:
    """A kernel module file of the unpacked kernel package."""

    name: str  # as the kernel names it: dashes become underscores
    path: Path
    depends: tuple[str, ...]
