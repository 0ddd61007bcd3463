"""Daemon pid files: one daemon per root, liveness, stopping by PID.

Layer: daemon support (standard library and ``errors`` only). A daemon holds an exclusive
``flock`` on its pid file for its whole life. Liveness is that lock, not
``kill(pid, 0)``: a daemon that exited but was not yet reaped by init still
has a PID, but no longer holds the lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from corral.errors import CorralError, DaemonError


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


def run_foreground(
    name: str,
    pid_path: Path,
    log_path: Path,
    main: Callable[[], Coroutine[Any, Any, None]],
    cleanup: Callable[[], None] | None = None,
) -> int:
    """Run a daemon's event loop in this process: log file, pid file, errors.

    Returns the exit status: 1 if another instance holds the pid file or the
    daemon refused to start (the reason goes to stderr and the log).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(log_path),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        fd = lock(pid_path, name)
    except DaemonError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    try:
        asyncio.run(main())
    except CorralError as err:
        logging.getLogger(f"corral.{name}").error("cannot start: %s", err)
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    finally:
        if cleanup is not None:
            cleanup()
        os.close(fd)
    return 0
