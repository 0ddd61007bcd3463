"""The master's side of node RPC: typed calls and per-node results.

Layer: RPC client (used by logical units). Derived from the table in
:mod:`corral.rpc.defs`: :meth:`RpcClient.call` takes an :class:`RpcCall`
and returns an :class:`RpcResult` typed by the call's result. Multi-node
calls return one result per node; a dead or offline node is a result, never
an exception. The transport is pluggable: in-process for the node the master
runs on, HTTPS with mutual TLS to ``corral-noded`` elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from corral import errors
from corral.errors import RpcError
from corral.rpc.defs import RpcCall

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class NodeTarget:
    """Where a call goes: the node's name, address and whether it is offline."""

    name: str
    address: str
    offline: bool = False


@dataclass(frozen=True)
class RpcResult(Generic[R]):
    """Outcome of one call on one node (Ganeti's ``RpcResult``)."""

    node: str
    call: str
    payload: R | None = None
    fail_msg: str | None = None
    offline: bool = False
    error: errors.CorralError | None = None

    @property
    def failed(self) -> bool:
        return self.fail_msg is not None or self.offline

    def get(self, what: str = "") -> R:
        """The payload, or raise :class:`RpcError` naming node, call and reason."""
        if self.offline:
            raise RpcError(
                f"{what or self.call}: node {self.node} is offline", node=self.node, call=self.call
            )
        if self.fail_msg is not None:
            code = self.error.code if self.error else None
            raise RpcError(
                f"{what or self.call} failed on node {self.node}: {self.fail_msg}",
                code,
                node=self.node,
                call=self.call,
            )
        assert self.payload is not None
        return self.payload


class Transport(Protocol):
    async def request(self, node: NodeTarget, name: str, body: bytes, timeout: float) -> bytes:
        """Send one encoded request; return the encoded reply or raise RpcError."""
        ...


class _Reply(msgspec.Struct):
    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: Any = None


_reply_decoder = msgspec.json.Decoder(_Reply)
_encoder = msgspec.json.Encoder()


class RpcClient:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def call(self, node: NodeTarget, call: RpcCall[A, R], args: A) -> RpcResult[R]:
        if node.offline:
            return RpcResult(node.name, call.name, offline=True)
        body = _encoder.encode(args)
        try:
            raw = await asyncio.wait_for(
                self.transport.request(node, call.name, body, call.timeout.value),
                call.timeout.value,
            )
        except TimeoutError:
            return RpcResult(
                node.name, call.name, fail_msg=f"timed out after {call.timeout.value:.0f}s"
            )
        except RpcError as err:
            return RpcResult(node.name, call.name, fail_msg=err.message, error=err)
        try:
            reply = _reply_decoder.decode(raw)
            if not reply.ok:
                remote = errors.from_wire(reply.error)
                return RpcResult(node.name, call.name, fail_msg=remote.message, error=remote)
            payload = msgspec.json.decode(reply.result, type=call.result)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            return RpcResult(node.name, call.name, fail_msg=f"malformed reply: {err}")
        return RpcResult(node.name, call.name, payload=payload)

    async def call_multi(
        self, nodes: list[NodeTarget], call: RpcCall[A, R], args: A
    ) -> dict[str, RpcResult[R]]:
        results = await asyncio.gather(*(self.call(n, call, args) for n in nodes))
        return {r.node: r for r in results}
