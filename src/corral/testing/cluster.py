"""A throw-away one-node cluster for tests, benchmarks and the demo.

Layer: testing support. Everything lives under a private ``CORRAL_ROOT``;
:meth:`TempCluster.close` stops the master daemon it started (by PID) and
removes the root, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from corral import bootstrap
from corral.client import Client
from corral.errors import DaemonError
from corral.paths import Paths

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempCluster:
    def __init__(
        self,
        prefix: str = "corral-test-",
        init: bool = True,
        node_name: str = "node1",
        init_args: list[str] | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.paths = Paths(self.root)
        self.env = {**os.environ, "CORRAL_ROOT": str(self.root)}
        self.node_name = node_name
        # Each test cluster's node daemon gets its own port on 127.0.0.1.
        self.noded_port = free_port()
        if init:
            self.run(
                "gnt-cluster",
                "init",
                "--node-name",
                node_name,
                "--noded-port",
                str(self.noded_port),
                *(init_args or []),
                "test-cluster",
                check=True,
            )

    # --- running commands -----------------------------------------------------------

    def run(
        self,
        prog: str,
        *args: str,
        check: bool = False,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a ``gnt-*``/``corral`` command against this cluster."""
        proc = subprocess.run(
            [str(BIN / prog), *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{prog} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def client(self) -> Client:
        return Client(self.paths)

    # --- the master daemon ------------------------------------------------------------

    def masterd_pid(self) -> int | None:
        return bootstrap.masterd_running(self.paths)

    def kill_masterd(self, sig: int = signal.SIGKILL) -> None:
        """Signal the master daemon this cluster started (found by its pid file)."""
        try:
            bootstrap.stop_masterd(self.paths, timeout=30, sig=sig)
        except DaemonError as err:
            raise AssertionError(str(err)) from err

    def start_masterd(self) -> None:
        self.run("corral-masterd", check=True)

    def config(self) -> dict[str, Any]:
        import msgspec

        data: dict[str, Any] = msgspec.json.decode(self.paths.config_file.read_bytes())
        return data

    def close(self) -> None:
        from corral.daemons import noded

        try:
            self.kill_masterd(signal.SIGTERM)
        except AssertionError:
            self.kill_masterd(signal.SIGKILL)
        noded.stop(self.paths)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
