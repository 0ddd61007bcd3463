"""Start-up shared by the benchmarks that run real QEMU (boot, hotplug, migrate).

Parses ``--runs``, checks root and the QEMU binary, builds the test guest,
pins the machine type Corral would use, and makes a work directory whose
processes get a bytecode cache (even when the caller sets
``PYTHONDONTWRITEBYTECODE``: else every daemon and CLI compiles its imports).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import NamedTuple

from _util import machine_note
from corral import testguest
from corral.errors import CorralError
from corral.hypervisor.kvm import probe


class KvmBench(NamedTuple):
    runs: int
    note: str
    guest: testguest.GuestImage
    machine: str
    work: Path


def start(name: str, kvm: str, doc: str | None, default_runs: int, runs_help: str) -> KvmBench:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    ap.add_argument("--runs", type=int, default=default_runs, help=runs_help)
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit(f"bench/{name}.py needs root (network namespaces, bridges, taps)")
    if not os.access(kvm, os.X_OK):
        raise SystemExit(f"{kvm} is missing: install qemu-system-x86")
    note = machine_note()
    try:
        guest = testguest.build()
        machine = asyncio.run(probe.pin_machine(kvm, "pc"))  # what Corral runs for "pc"
    except CorralError as err:
        raise SystemExit(f"{name} benchmark cannot start: {err}") from None
    work = Path(tempfile.mkdtemp(prefix=f"corral-bench-{name}-", dir="/var/tmp"))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return KvmBench(args.runs, note, guest, machine, work)


def kill_ours(pids: dict[str, int], directory: Path) -> None:
    """SIGKILL the QEMUs in ``pids`` whose argv names ``directory`` (so a reused pid is
    never hit); empties ``pids``."""
    for name, pid in list(pids.items()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            argv = b""
        if str(directory).encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        del pids[name]
