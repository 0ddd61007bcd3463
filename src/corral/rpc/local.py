"""In-process transport: the master calling the backend of its own node.

Layer: RPC transport. Requests still go through encode → dispatch → decode,
exactly the path ``corral-noded`` serves, so nothing is shared by reference.
"""

from __future__ import annotations

from corral.backend import load as load_backend
from corral.backend.dispatch import dispatch
from corral.backend.node import NodeBackend
from corral.errors import RpcError
from corral.rpc.client import NodeTarget


class LocalTransport:
    def __init__(self, backend: NodeBackend) -> None:
        load_backend()
        self.backend = backend

    async def request(self, node: NodeTarget, name: str, body: bytes, timeout: float) -> bytes:
        if node.name != self.backend.node_name:
            raise RpcError(
                f"node {node.name} is not reachable from this master "
                f"(no node daemon transport configured)",
                node=node.name,
                call=name,
            )
        return await dispatch(self.backend, name, body)
