"""Throw-away ovsdb-servers for tests (unix sockets in a temp dir, killed by PID).

Nothing listens on TCP in the host's namespace.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.network import ovsdb
from corral.vcluster.ovn import NB_SCHEMA, SB_SCHEMA, VSWITCH_SCHEMA

__all__ = ["NB_SCHEMA", "SB_SCHEMA", "VSWITCH_SCHEMA", "Server", "Servers", "ovsdb_servers"]


@dataclass
class Server:
    """One throw-away ovsdb-server."""

    sock: Path
    db_file: Path
    proc: subprocess.Popen[bytes]

    @property
    def remote(self) -> str:
        return f"unix:{self.sock}"


class Servers:
    """Starts ovsdb-servers in one temp dir; :meth:`close` kills them by PID."""

    def __init__(self) -> None:
        self.prefix = "cx" + secrets.token_hex(2)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir="/tmp"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        schema: str,
        name: str,
        *,
        db_file: Path | None = None,
        sock: Path | None = None,
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
    ) -> Server:
        if not Path(schema).exists():
            pytest.skip(f"{schema} is not installed")
        sock = sock or self.dir / f"{name}.sock"
        if db_file is None:
            db_file = self.dir / f"{name}.db"
            subprocess.run(["ovsdb-tool", "create", str(db_file), schema], check=True)
        sock.parent.mkdir(parents=True, exist_ok=True)
        proc = popen(
            [
                "ovsdb-server",
                str(db_file),
                f"--remote=punix:{sock}",
                f"--unixctl={self.dir / name}.ctl",
                "--no-chdir",
                f"--log-file={self.dir / name}.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        # The socket file appears at bind(), connections succeed after listen().
        deadline = time.monotonic() + 10
        while not _accepts(sock):
            assert proc.poll() is None, f"ovsdb-server for {name} exited"
            assert time.monotonic() < deadline, f"ovsdb-server for {name} did not start"
            time.sleep(0.01)
        return Server(sock, db_file, proc)

    def stop(self, server: Server) -> None:
        server.proc.kill()
        server.proc.wait()

    def close(self) -> None:
        ovsdb.close_all()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _accepts(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


@contextmanager
def ovsdb_servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.close()
