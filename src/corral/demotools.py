"""Helpers of ``make demo``: the guest's console log, ping probes, shortened output.

Layer: testing support (imports ``testguest``, ``vcluster``). Kept apart from
:mod:`corral.demo` so the tour there reads as the list of what an admin types.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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
    after: Callable[[testguest.ConsoleLine], bool] | None = None,
) -> list[ConsoleReport] | None:
    """The reports up to the first one ``done`` accepts, or ``None`` on timeout.

    With ``after``, only reports that follow one ``after`` accepts count (a
    reboot's new ``DEVICES`` line, not the one printed while powering off).
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = reports(node, inst, offset)
        armed = after is None
        for i, rep in enumerate(seen):
            if armed and done(rep.line):
                return seen[: i + 1]
            if not armed and after is not None and after(rep.line):
                armed = True
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def devices_with(mac: str) -> Callable[[testguest.ConsoleLine], bool]:
    """Accepts a ``DEVICES`` line that lists a NIC with ``mac``."""

    def done(line: testguest.ConsoleLine) -> bool:
        return isinstance(line, testguest.DevicesLine) and mac in line.macs

    return done


def devices_without(mac: str) -> Callable[[testguest.ConsoleLine], bool]:
    """Accepts a ``DEVICES`` line that no longer lists a NIC with ``mac``."""

    def done(line: testguest.ConsoleLine) -> bool:
        return isinstance(line, testguest.DevicesLine) and mac not in line.macs

    return done


def devices_with_disks(count: int) -> Callable[[testguest.ConsoleLine], bool]:
    """Accepts a ``DEVICES`` line that lists at least ``count`` disks."""

    def done(line: testguest.ConsoleLine) -> bool:
        return isinstance(line, testguest.DevicesLine) and len(line.blk) >= count

    return done


def is_poweroff(line: testguest.ConsoleLine) -> bool:
    return isinstance(line, testguest.PowerOffLine)


def is_boot(line: testguest.ConsoleLine) -> bool:
    return isinstance(line, testguest.BootLine)


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


# --- pings across a migration ------------------------------------------------------------

_REPLY = re.compile(r"^\[(\d+\.\d+)\] .* icmp_seq=(\d+) ")


class Pinger:
    """``ping -D -i <interval>`` from namespace ``ns``, its replies as (wall time, seq).

    Lost requests are counted by sequence gaps, not from ping's summary: a
    request still in flight when ping is stopped is not a loss.
    """

    def __init__(
        self, ns: str, address: str, interval: float = 0.01, extra: tuple[str, ...] = ()
    ) -> None:
        self.address = address
        self.replies: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-n", "-D", "-i", str(interval), *extra, address],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"ping-{address}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = _REPLY.match(line)
            if m:
                with self._lock:
                    self.replies.append((float(m[1]), int(m[2])))

    def wait_reply(self, after: float = 0.0, timeout: float = 10.0) -> bool:
        """True once a reply arrived after wall time ``after`` (``time.time()``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.replies and self.replies[-1][0] > after:
                    return True
            time.sleep(0.005)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def answered(self) -> int:
        with self._lock:
            return len({s for _, s in self.replies})

    def lost(self, start: float, end: float) -> int | None:
        """Requests without a reply between the last reply before ``start`` and the
        first one after ``end`` (wall times); ``None`` without replies on both sides."""
        with self._lock:
            replies = list(self.replies)
        before = [s for ts, s in replies if ts < start]
        after = [s for ts, s in replies if ts > end]
        if not before or not after:
            return None
        got = {s for _, s in replies}
        return sum(1 for s in range(max(before) + 1, min(after)) if s not in got)


_MIGRATED = re.compile(r"QEMU: total (\d+) ms, downtime (\d+) ms")


def migration_downtime(job_output: str) -> int | None:
    """QEMU's downtime (ms) from ``gnt-instance migrate``'s "Migration completed" line."""
    m = _MIGRATED.search(job_output)
    return int(m[2]) if m else None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
