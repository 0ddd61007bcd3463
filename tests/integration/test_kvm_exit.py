"""When the node daemon calls a QEMU gone: every thread ended, its files closed.

A multi-threaded process whose main thread ends first shows as a zombie
while another thread still frees its memory, with its files (QEMU's taps)
still open: ~20 ms for a 256 MiB guest on these machines. ``wait_exit``
must not report such a process gone. Real processes stand in for QEMU
(the same argv marker: the instance's QMP socket path); no timing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corral.hypervisor.kvm import launch
from corral.hypervisor.kvm.files import KvmFiles
from corral.paths import Paths

# Touches 256 MiB (a slow teardown), keeps a second thread alive and holds
# the write end of our pipe (passed down, as QEMU holds its tap), then waits.
_FAKE_QEMU = """
import sys, threading, time
mem = bytearray(256 << 20)
for i in range(0, len(mem), 4096):
    mem[i] = 1
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


def _start(files: KvmFiles, name: str, write_end: int) -> subprocess.Popen[str]:
    marker = f"-qmp=unix:{files.ctrl_dir / f'{name}.qmp'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FAKE_QEMU, marker],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=[write_end],
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _closed_everywhere(read_end: int) -> bool:
    """EOF on the pipe: no process holds its write end any more."""
    try:
        return os.read(read_end, 1) == b""
    except BlockingIOError:
        return False


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_gone_means_files_closed(tmp_path: Path, how: str) -> None:
    files = KvmFiles(Paths(tmp_path))
    files.ensure()
    r, w = os.pipe()
    fcntl.fcntl(r, fcntl.F_SETFL, os.O_NONBLOCK)
    proc = _start(files, "inst1", w)
    os.close(w)
    try:
        assert not _closed_everywhere(r)
        gone = asyncio.run(
            launch.wait_exit(files, "inst1", proc.pid, 30.0, send=signal.Signals[how])
        )
        assert gone
        assert _closed_everywhere(r), "reported gone while the process still held its files"
    finally:
        proc.kill()
        proc.wait()
        os.close(r)


def test_another_program_on_the_pid_is_not_waited_for(tmp_path: Path) -> None:
    """A pid reused by another program: gone at once, and it is not signalled."""
    files = KvmFiles(Paths(tmp_path))
    files.ensure()
    other = subprocess.Popen(["sleep", "60"])
    try:
        while not Path(f"/proc/{other.pid}/cmdline").read_bytes().startswith(b"sleep"):
            pass  # until it has exec'd (right after fork its argv is ours, then empty)
        gone = asyncio.run(launch.wait_exit(files, "inst1", other.pid, 5.0, send=signal.SIGKILL))
        assert gone
        assert other.poll() is None  # still running: never ours to kill
    finally:
        other.kill()
        other.wait()
