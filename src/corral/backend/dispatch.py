"""The node-side RPC dispatcher, derived from the RPC table.

Layer: node backend entry. :func:`handler` registers one backend function
per :class:`~corral.rpc.defs.RpcCall`; :func:`dispatch` decodes a request
body with the call's argument type, runs the handler and encodes a reply.
Bad input (unknown call, wrong types, garbage bytes) becomes an error reply;
it never raises out of :func:`dispatch`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from corral.errors import CorralError, ProtocolError
from corral.rpc.defs import CALLS, RpcCall

log = logging.getLogger(__name__)

A = TypeVar("A")
R = TypeVar("R")

Handler = Callable[[Any, Any], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {}

MAX_BODY = 16 * 1024 * 1024

_encoder = msgspec.json.Encoder()


def handler(
    call: RpcCall[A, R],
) -> Callable[[Callable[[Any, A], Awaitable[R]]], Callable[[Any, A], Awaitable[R]]]:
    """Register the backend function that serves ``call``."""

    def deco(fn: Callable[[Any, A], Awaitable[R]]) -> Callable[[Any, A], Awaitable[R]]:
        assert call.name not in HANDLERS, call.name
        HANDLERS[call.name] = fn
        return fn

    return deco


def check_complete() -> None:
    """Every declared call has exactly one handler (called at import of the backend)."""
    missing = set(CALLS) - set(HANDLERS)
    extra = set(HANDLERS) - set(CALLS)
    if missing or extra:
        raise RuntimeError(f"RPC table mismatch: missing={sorted(missing)} extra={sorted(extra)}")


def error_reply(err: CorralError) -> bytes:
    return _encoder.encode({"ok": False, "error": err.to_wire()})


async def dispatch(backend: Any, name: str, body: bytes) -> bytes:
    call = CALLS.get(name)
    if call is None:
        return error_reply(ProtocolError(f"unknown RPC call {name!r}"))
    if len(body) > MAX_BODY:
        return error_reply(ProtocolError(f"request body too large ({len(body)} bytes)"))
    try:
        args = msgspec.json.decode(body, type=call.args)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        return error_reply(ProtocolError(f"invalid arguments for {name}: {err}"))
    try:
        result = await HANDLERS[name](backend, args)
    except CorralError as err:
        return error_reply(err)
    except Exception as err:  # a bug in a handler: report it, keep serving
        log.exception("RPC %s failed", name)
        return error_reply(CorralError(f"internal error in {name}: {err!r}"))
    return _encoder.encode({"ok": True, "result": result})
