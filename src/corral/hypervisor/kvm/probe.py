"""What the node's QEMU and CPU can do: machine types, accelerator, version.

Layer: driver (subprocess + /proc reads, cached per binary). The answers
are used to pin the machine type at start and to pick the accelerator; the
argv builder stays pure.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import Literal

from corral.errors import ECode, HypervisorError


@dataclass(frozen=True)
class QemuInfo:
    version: str
    machines: frozenset[str]
    aliases: dict[str, str]  # "pc" -> "pc-i440fx-7.2"
    default: str | None


_cache: dict[tuple[str, float], QemuInfo] = {}


async def _run(argv: list[str], timeout: float = 20.0) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as err:
        raise HypervisorError(f"cannot run {argv[0]}: {err.strerror}", ECode.ENVIRON) from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise HypervisorError(f"{' '.join(argv)} did not answer in {timeout} s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise HypervisorError(
            f"{' '.join(argv)} failed (exit {proc.returncode}): {text.strip()[-300:]}",
            ECode.ENVIRON,
        )
    return text


def parse_machines(text: str) -> tuple[frozenset[str], dict[str, str], str | None]:
    machines: set[str] = set()
    aliases: dict[str, str] = {}
    default = None
    for line in text.splitlines()[1:]:
        parts = line.split(None, 1)
        if not parts:
            continue
        name, desc = parts[0], parts[1] if len(parts) > 1 else ""
        machines.add(name)
        m = re.search(r"\(alias of ([^)]+)\)", desc)
        if m:
            aliases[name] = m.group(1)
        if "(default)" in desc:
            default = name
    return frozenset(machines), aliases, default


async def qemu_info(kvm_path: str) -> QemuInfo:
    try:
        st = os.stat(kvm_path)
    except OSError as err:
        raise HypervisorError(
            f"QEMU binary {kvm_path} is missing ({err.strerror})", ECode.ENVIRON
        ) from None
    key = (kvm_path, st.st_mtime)
    if key not in _cache:
        version_text = await _run([kvm_path, "-version"])
        m = re.search(r"version (\S+)", version_text)
        machines, aliases, default = parse_machines(
            await _run([kvm_path, "-machine", "help", "-accel", "tcg"])
        )
        _cache[key] = QemuInfo(m.group(1) if m else "unknown", machines, aliases, default)
    return _cache[key]


async def pin_machine(kvm_path: str, requested: str) -> str:
    """The concrete machine type to run (aliases like ``pc`` resolved and pinned)."""
    info = await qemu_info(kvm_path)
    want = requested or "pc"
    if want not in info.machines:
        raise HypervisorError(
            f"machine type {want!r} is not supported by {kvm_path} (QEMU {info.version})",
            ECode.ENVIRON,
        )
    return info.aliases.get(want, want)


def hardware_virtualization() -> bool:
    """True when the CPU advertises VT-x/AMD-V (not just a usable /dev/kvm)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "vmx" in flags or "svm" in flags
    except OSError:
        pass
    return False


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def accelerator(kvm_flag: str) -> Literal["kvm", "tcg"]:
    """Pick the accelerator; KVM only when asked or when the CPU really has it.

    ``/dev/kvm`` alone is not enough: a nested software layer (``kvm-pvm``)
    provides it on machines where a Linux guest cannot run (TESTGUEST.md).
    """
    if kvm_flag == "disabled":
        return "tcg"
    if kvm_flag == "enabled":
        if not kvm_usable():
            raise HypervisorError("kvm_flag=enabled but /dev/kvm is not usable", ECode.ENVIRON)
        return "kvm"
    return "kvm" if kvm_usable() and hardware_virtualization() else "tcg"
