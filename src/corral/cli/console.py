"""``gnt-instance console``: the serial console through the node daemon.

Layer: CLI. Runs on the master (it has the cluster certificate): asks the
master where the console is, then opens a WebSocket to the primary node's
daemon over mutual TLS and copies bytes between it and the terminal (raw
mode on a TTY; ``Ctrl-]`` detaches, as with telnet). Without a TTY it is a
plain pipe, which scripts and tests use: it ends half a second after the
end of its input.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import termios
import tty
from typing import Any

from corral.cli.common import EXIT_SUCCESS, UsageError
from corral.client import Client
from corral.errors import ECode, HypervisorError
from corral.paths import Paths

DETACH = b"\x1d"  # Ctrl-]


def setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance")
    p.add_argument(
        "--show-cmd",
        action="store_true",
        help="show how to reach the console instead of opening it",
    )


def run(client: Client, args: argparse.Namespace) -> int:
    op = {"OP_ID": "OP_INSTANCE_CONSOLE", "instance_name": args.instance}
    (info,) = client.wait_for_job(client.submit_job([op]))
    if info["kind"] != "serial":
        print(info["message"])
        return EXIT_SUCCESS if info["kind"] == "vnc" else ECode.STATE.exit_code
    url = f"https://{info['host']}:{info['port']}{info['path']}?hypervisor={info['hypervisor']}"
    if args.show_cmd:
        print(f"gnt-instance console {info['instance']}  # via {url} (node {info['node']})")
        return EXIT_SUCCESS
    # Imported here, like aiohttp below: asyncio (and the ssl it pulls in) costs
    # ~40 ms of start-up that every other gnt-instance subcommand should not pay.
    import asyncio

    return asyncio.run(_attach(url.replace("https://", "wss://", 1), info))


async def _attach(url: str, info: dict[str, Any]) -> int:
    # Imported here: aiohttp and cryptography cost ~0.2 s of start-up that
    # every other gnt-instance subcommand should not pay.
    import asyncio

    import aiohttp

    from corral import pki

    ctx = pki.client_context(Paths.from_env())
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    is_tty = os.isatty(stdin_fd)
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, ssl=ctx, server_hostname=info["node"], heartbeat=30)
        except aiohttp.WSServerHandshakeError as err:
            raise HypervisorError(
                f"the node refused the console of {info['instance']}: {err.message}", ECode.STATE
            ) from None
        except (aiohttp.ClientError, OSError) as err:
            raise HypervisorError(
                f"cannot reach node {info['node']}: {err}", ECode.ENVIRON
            ) from None
        if is_tty:
            sys.stderr.write(
                f"Connected to the console of {info['instance']}; Ctrl-] detaches.\r\n"
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(stdin_fd, 4096)
            except OSError:
                data = b""
            queue.put_nowait(data)
            if not data:
                loop.remove_reader(stdin_fd)

        old = termios.tcgetattr(stdin_fd) if is_tty else None
        if is_tty:
            tty.setraw(stdin_fd)
        try:
            loop.add_reader(stdin_fd, readable)
        except PermissionError:  # a regular file (e.g. </dev/null): nothing to send
            queue.put_nowait(b"")

        async def upstream() -> None:
            while data := await queue.get():
                if is_tty and DETACH in data:
                    data = data.split(DETACH, 1)[0]
                    if data:
                        await ws.send_bytes(data)
                    break
                await ws.send_bytes(data)
            if not is_tty:
                # End of input on a pipe: like socat, let the last output arrive.
                await asyncio.sleep(0.5)
            await ws.close()

        up = asyncio.create_task(upstream())
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    os.write(stdout_fd, msg.data)
                else:
                    break
        finally:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
            loop.remove_reader(stdin_fd)
            if old is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, old)
    return EXIT_SUCCESS


__all__ = ["UsageError", "run", "setup"]
