"""``corral-masterd``: the master daemon, serving LUXI on a UNIX socket.

Layer: daemon (imports ``master``). One asyncio event loop runs the job
queue, the logical units, queries and the socket server. A malformed
request gets an error reply; the daemon keeps serving. Only one masterd
runs per root (an exclusive lock on the pid file).

Usage: ``corral-masterd [-f]`` — without ``-f`` it starts itself in the
background and returns once the socket answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from corral import failover, luxi
from corral.daemons import pidfile
from corral.errors import CorralError, DaemonError, ProtocolError
from corral.master import METHODS, Master
from corral.paths import Paths

log = logging.getLogger("corral.masterd")


class LuxiServer:
    def __init__(self, master: Master) -> None:
        self.master = master
        self.server: asyncio.AbstractServer | None = None
        self.clients: set[asyncio.Task[Any]] = set()

    async def start(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.server = await asyncio.start_unix_server(
            self._client, path=path, limit=luxi.MAX_MESSAGE
        )
        os.chmod(path, 0o660)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.clients.add(task)
        try:
            while True:
                try:
                    data = await reader.readuntil(luxi.ETX)
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    writer.write(
                        luxi.encode_reply(False, ProtocolError("request too large").to_wire())
                    )
                    await writer.drain()
                    return
                reply = await self.handle(data[:-1])
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, BrokenPipeError):
            return
        finally:
            self.clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, data: bytes) -> bytes:
        try:
            req = luxi.decode_request(data)
            if req.method not in METHODS:
                raise ProtocolError(f"unknown LUXI method {req.method!r}")
            result = await getattr(self.master, req.method)(*req.args)
            return luxi.encode_reply(True, result)
        except CorralError as err:
            return luxi.encode_reply(False, err.to_wire())
        except TypeError as err:  # wrong number of arguments
            return luxi.encode_reply(False, ProtocolError(f"bad arguments: {err}").to_wire())
        except Exception as err:
            log.exception("LUXI request failed")
            return luxi.encode_reply(False, CorralError(f"internal error: {err!r}").to_wire())

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.clients):
            t.cancel()
        await asyncio.gather(*self.clients, return_exceptions=True)


async def serve(paths: Paths, no_voting: bool = False) -> None:
    master = Master(paths)
    # Refuse to act as master where the cluster says otherwise (an old master
    # coming back after a failover), before touching the job queue.
    await failover.check_master_role(paths, master.cfg.data, no_voting)
    failed, requeued = master.start()
    # The loaded config is long-lived: keep the cyclic GC from re-scanning it in
    # every full collection (with 10k instances each one costs ~20 ms, and a big
    # query triggers one). Config objects hold no reference cycles.
    gc.freeze()
    if failed or requeued:
        log.info(
            "recovered job queue: %d jobs failed (master restart), %d requeued", failed, requeued
        )
    server = LuxiServer(master)
    await server.start(str(paths.master_socket))
    log.info("corral-masterd serving on %s", paths.master_socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    await master.stop()


def run_foreground(paths: Paths, no_voting: bool = False) -> int:
    paths.ensure()

    def remove_socket() -> None:
        with contextlib.suppress(OSError):
            os.unlink(paths.master_socket)

    return pidfile.run_foreground(
        "corral-masterd",
        paths.masterd_pidfile,
        paths.masterd_log,
        lambda: serve(paths, no_voting),
        remove_socket,
    )


def start_background(
    paths: Paths, timeout: float = 30.0, extra_args: list[str] | None = None
) -> int:
    """Start masterd detached; return its pid once the socket answers."""
    from corral.client import Client

    paths.ensure()
    errlog = open(paths.log_dir / "masterd.stderr", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.daemons.masterd", "-f", *(extra_args or [])],
        stdin=subprocess.DEVNULL,
        stdout=errlog,
        stderr=errlog,
        start_new_session=True,
        env={**os.environ, "CORRAL_ROOT": str(paths.root)},
    )
    errlog.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (paths.log_dir / "masterd.stderr").read_text(errors="replace")[-500:]
            raise DaemonError(
                f"corral-masterd exited with status {proc.returncode}: {tail.strip()}"
            )
        try:
            Client(paths).call("QueryConfigValues", [["cluster_name"]])
            return proc.pid
        except DaemonError:
            time.sleep(0.02)
    raise DaemonError(f"corral-masterd did not answer within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="corral-masterd", description=__doc__.splitlines()[0])
    p.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    p.add_argument(
        "--no-voting",
        action="store_true",
        help="start even if a majority of master candidates cannot confirm this node is the master",
    )
    args = p.parse_args(argv)
    paths = Paths.from_env()
    if args.foreground:
        return run_foreground(paths, args.no_voting)
    try:
        pid = start_background(paths, extra_args=["--no-voting"] if args.no_voting else [])
    except CorralError as err:
        print(f"corral-masterd: {err}", file=sys.stderr)
        return 1
    print(f"corral-masterd started (pid {pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
