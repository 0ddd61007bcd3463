"""LUXI framing: Ganeti's local protocol between the CLI and the master.

Layer: wire (imports ``errors``). Each message is one JSON document
terminated by ``\\x03``. Requests are ``{"method", "args", "version"}``;
replies ``{"success", "result"}`` — on failure ``result`` is an encoded
:class:`~corral.errors.CorralError`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from corral.errors import ProtocolError

ETX = b"\x03"
LUXI_VERSION = 3000000
MAX_MESSAGE = 64 * 1024 * 1024


class Request(msgspec.Struct, forbid_unknown_fields=False):
    method: str
    args: list[Any] = []
    version: int | None = None


class Reply(msgspec.Struct):
    success: bool
    result: Any = None


_req_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)
_encoder = msgspec.json.Encoder()


def encode_request(method: str, args: list[Any]) -> bytes:
    return _encoder.encode(Request(method=method, args=args, version=LUXI_VERSION)) + ETX


def decode_request(data: bytes) -> Request:
    try:
        return _req_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ProtocolError(f"malformed LUXI request: {err}") from None
    except RecursionError:
        raise ProtocolError("malformed LUXI request: nested too deeply") from None


def encode_reply(success: bool, result: Any) -> bytes:
    return _encoder.encode(Reply(success=success, result=result)) + ETX


def decode_reply(data: bytes) -> Reply:
    try:
        return _reply_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ProtocolError(f"malformed LUXI reply: {err}") from None
