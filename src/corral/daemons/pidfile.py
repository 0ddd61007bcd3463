"""Daemon pid files: one daemon per root, liveness, stopping by PID.

Layer: daemon support (standard library only). A daemon holds an exclusive
``flock`` on its pid file for its whole life. Liveness is that lock, not
``kill(pid, 0)``: a daemon that exited but was not yet reaped by init still
has a PID, but no longer holds the lock.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from corral.errors import DaemonError


def lock(path: Path, what: str) -> int:
    """Take the pid file for this process; raise if another ``what`` holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DaemonError(f"another {what} is running ({path})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def running(path: Path) -> int | None:
    """PID of the daemon holding ``path``, or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.read(fd, 64).decode().strip())
            except ValueError:
                return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop(path: Path, what: str, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Signal the daemon holding ``path`` and wait until it is gone."""
    pid = running(path)
    if pid is None:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running(path) is None:
            return True
        time.sleep(0.01)
    raise DaemonError(f"{what} (pid {pid}) did not stop within {timeout:.0f}s")
