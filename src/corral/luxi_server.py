"""LUXI framing, the master's half: requests validated and replies encoded by msgspec.

Layer: wire (imports ``errors``). Separate from :mod:`corral.luxi` so that
the CLI, which only encodes requests and decodes replies, never imports
msgspec (~12 ms of start-up with a bytecode cache, ~50 ms without one).
:mod:`corral.luxi` forwards to these functions.
"""

from __future__ import annotations

from typing import Any

import msgspec

from corral.errors import ProtocolError


class Request(msgspec.Struct, forbid_unknown_fields=False):
    method: str
    args: list[Any] = []
    version: int | None = None


class _Reply(msgspec.Struct):
    success: bool
    result: Any = None


_req_decoder = msgspec.json.Decoder(Request)
# The encoder knows msgspec Structs, which query results and job data contain.
_encoder = msgspec.json.Encoder()


def decode_request(data: bytes) -> Request:
    try:
        return _req_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ProtocolError(f"malformed LUXI request: {err}") from None
    except RecursionError:
        raise ProtocolError("malformed LUXI request: nested too deeply") from None


def encode_reply(success: bool, result: Any) -> bytes:
    """One reply document, without the ETX terminator."""
    return _encoder.encode(_Reply(success=success, result=result))
