"""Processes the virtual cluster started: records, identity checks, stopping.

Layer: testing support. A process is only ever signalled by PID, and only
when ``/proc/<pid>`` still shows the program we recorded (its command line
ends with the recorded argv — a script's interpreter may come first — and,
when known, its start time matches), so a recycled PID is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ProcRecord:
    pid: int
    argv: list[str]
    ns: str
    role: str  # "noded", "masterd", ... free text
    starttime: int | None = None  # /proc/<pid>/stat field 22 (clock ticks since boot)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcRecord:
        return cls(
            pid=int(d["pid"]),
            argv=[str(a) for a in d["argv"]],
            ns=str(d.get("ns", "")),
            role=str(d.get("role", "")),
            starttime=int(d["starttime"]) if d.get("starttime") is not None else None,
        )


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None  # zombie or kernel thread
    return [a.decode(errors="surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")]


def starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may contain spaces.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])  # field 22 overall


def argv_matches(actual: list[str], recorded: list[str]) -> bool:
    return bool(recorded) and len(actual) >= len(recorded) and actual[-len(recorded) :] == recorded


def is_ours(rec: ProcRecord) -> bool:
    """Whether PID ``rec.pid`` is still the very process we recorded."""
    actual = cmdline(rec.pid)
    if actual is None or not argv_matches(actual, rec.argv):
        return False
    return rec.starttime is None or starttime(rec.pid) == rec.starttime


def reap(pid: int) -> None:
    """Collect ``pid`` if it is a child of this process (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _gone(pid: int) -> bool:
    reap(pid)
    return cmdline(pid) is None


def stop(records: list[ProcRecord], timeout: float = 5.0) -> list[int]:
    """SIGTERM the recorded processes that are still ours, SIGKILL after ``timeout``.

    Returns the PIDs that were signalled.
    """
    live = [r for r in records if is_ours(r)]
    for r in records:
        if r not in live:
            reap(r.pid)
    for r in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = list(live)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not _gone(r.pid)]
        if pending:
            time.sleep(0.05)
    for r in pending:
        if is_ours(r):
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not _gone(r.pid)]
        if pending:
            time.sleep(0.02)
    return [r.pid for r in live]
