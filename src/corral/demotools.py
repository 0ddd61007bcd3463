"""Helpers of ``make demo``: the guest's console log, ping probes, shortened output.

Layer: testing support (imports ``testguest``, ``vcluster``). Kept apart from
:mod:`corral.demo` so the tour there reads as the list of what an admin types.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from corral import testguest
from corral import vcluster as vcl

# Sections of ``gnt-instance info`` whose every default is listed; the demo
# keeps only the keys that say how the test guest boots.
_LONG_SECTIONS = ("Hypervisor parameters:", "Back-end parameters:")
INFO_KEEP = frozenset(
    {"kernel_path", "initrd_path", "kernel_args", "kvm_flag", "maxmem", "vcpus", "serial_console"}
)


@dataclass(frozen=True)
class ConsoleReport:
    """One line the test guest printed on its serial console, as logged by the node."""

    raw: str
    line: testguest.ConsoleLine


def console_log(node: vcl.VNode, inst: str) -> Path:
    """Where ``node``'s KVM driver logs the instance's serial console."""
    return node.paths.log_dir / "kvm" / f"{inst}.console.log"


def log_size(node: vcl.VNode, inst: str) -> int:
    try:
        return console_log(node, inst).stat().st_size
    except FileNotFoundError:
        return 0


def reports(node: vcl.VNode, inst: str, offset: int = 0) -> list[ConsoleReport]:
    """The guest's reports logged after byte ``offset`` (kernel noise left out)."""
    try:
        data = console_log(node, inst).read_bytes()[offset:]
    except FileNotFoundError:
        return []
    out = []
    for raw in data.decode(errors="replace").splitlines():
        line = testguest.parse_line(raw)
        if line is not None:
            out.append(ConsoleReport(raw.strip("\r\n "), line))
    return out


def wait_report(
    node: vcl.VNode,
    inst: str,
    done: Callable[[testguest.ConsoleLine], bool],
    *,
    offset: int = 0,
    timeout: float = 120.0,
) -> list[ConsoleReport] | None:
    """The reports up to the first one ``done`` accepts, or ``None`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        seen = reports(node, inst, offset)
        for i, rep in enumerate(seen):
            if done(rep.line):
                return seen[: i + 1]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def devices_with(mac: str) -> Callable[[testguest.ConsoleLine], bool]:
    """Accepts a ``DEVICES`` line that lists a NIC with ``mac``."""

    def done(line: testguest.ConsoleLine) -> bool:
        return isinstance(line, testguest.DevicesLine) and mac in line.macs

    return done


def is_poweroff(line: testguest.ConsoleLine) -> bool:
    return isinstance(line, testguest.PowerOffLine)


def console_tail(node: vcl.VNode, inst: str, size: int = 1500) -> str:
    try:
        return console_log(node, inst).read_bytes()[-size:].decode(errors="replace")
    except FileNotFoundError:
        return "(no console log)"


def wait_answers(ns: str, address: str, timeout: float = 30.0) -> bool:
    """True once ``address`` answers one ping from namespace ``ns``.

    Before the ping the admin sees: the guest has just set its address, and
    the first packet may be spent on ARP and on the bridges learning its MAC.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return True
    return False


def shorten_info(text: str, keep: Iterable[str] = INFO_KEEP) -> str:
    """``gnt-instance info`` without the parameters left at uninteresting defaults.

    Inside the hypervisor and back-end parameter sections only the keys in
    ``keep`` stay; one ``…`` line says how many were left out.
    """
    wanted = set(keep)
    out: list[str] = []
    in_long = False
    dropped = 0
    indent = ""

    def flush() -> None:
        nonlocal dropped
        if dropped:
            out.append(f"{indent}… ({dropped} more)")
            dropped = 0

    for line in text.splitlines():
        stripped = line.strip()
        if stripped in _LONG_SECTIONS:
            flush()
            in_long = True
            out.append(line)
            continue
        if in_long:
            key, sep, _ = stripped.partition(":")
            level = len(line) - len(line.lstrip())
            if sep and level > 2 and not stripped.startswith("- "):
                indent = line[:level]
                if key in wanted:
                    out.append(line)
                else:
                    dropped += 1
                continue
            flush()
            in_long = False
        out.append(line)
    flush()
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
