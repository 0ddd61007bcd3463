"""Serial consoles over the node daemon's mutual-TLS port (no SSH needed).

Layer: daemon. ``GET /console/<instance>?hypervisor=kvm`` upgrades to a
WebSocket that carries the raw bytes of the instance's serial socket both
ways; ``gnt-instance console`` on the master is the client. QEMU's serial
socket takes one client at a time, so a second console waits its turn
rather than stealing the first.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from corral.backend.dispatch import error_reply
from corral.backend.node import NodeBackend
from corral.errors import CorralError, ECode, HypervisorError

_CHUNK = 65536


def _error(status: int, err: CorralError) -> web.Response:
    return web.Response(status=status, body=error_reply(err), content_type="application/json")


async def serve(request: web.Request, backend: NodeBackend) -> web.StreamResponse:
    name = request.match_info["instance"]
    hv_name = request.query.get("hypervisor", "kvm")
    try:
        path = backend.hv(hv_name).console_socket(name)
    except CorralError as err:
        return _error(400, err)
    if path is None:
        return _error(
            404,
            HypervisorError(
                f"instance {name} is not running here or has no serial console", ECode.NOENT
            ),
        )
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 10)
    except (TimeoutError, OSError) as err:
        return _error(
            409, HypervisorError(f"cannot open the console of {name}: {err}", ECode.STATE)
        )
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)

    async def to_client() -> None:
        while data := await reader.read(_CHUNK):
            await ws.send_bytes(data)

    pump = asyncio.create_task(to_client())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                writer.write(msg.data)
                await writer.drain()
            elif msg.type == WSMsgType.TEXT:
                writer.write(msg.data.encode())
                await writer.drain()
            else:
                break
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        writer.close()
        await ws.close()
    return ws
