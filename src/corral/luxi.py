"""LUXI framing: Ganeti's local protocol between the CLI and the master.

Layer: wire (imports ``errors``). Each message is one JSON document
terminated by ``\\x03``. Requests are ``{"method", "args", "version"}``;
replies ``{"success", "result"}`` — on failure ``result`` is an encoded
:class:`~corral.errors.CorralError`.

The client's half (:func:`encode_request`, :func:`decode_reply`) uses the
standard library's ``json``: every ``gnt-*`` command starts with it, and
importing msgspec would cost more than a whole small command's round trip
(json decodes a 1 MB query reply about as fast). The master's half lives
in :mod:`corral.luxi_server` and is imported on first use.
"""

from __future__ import annotations

import json

from corral.errors import ProtocolError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

    from corral.luxi_server import Request

ETX = b"\x03"
LUXI_VERSION = 3000000
MAX_MESSAGE = 64 * 1024 * 1024


class Reply:
    """A decoded reply. A plain class, not a NamedTuple: that needs typing (see corral.errors)."""

    __slots__ = ("result", "success")

    def __init__(self, success: bool, result: Any = None) -> None:
        self.success = success
        self.result = result


def _to_builtins(obj: Any) -> Any:
    # Only for what json cannot encode itself (a Struct, a set, a dataclass…):
    # msgspec's own conversion, so such arguments encode as they always did.
    import msgspec

    return msgspec.to_builtins(obj)


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON (and the master's decoder refuses them too).
    raise ValueError(f"invalid JSON constant {name}")


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_to_builtins)
_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def encode_request(method: str, args: list[Any]) -> bytes:
    doc = {"method": method, "args": args, "version": LUXI_VERSION}
    return _encoder.encode(doc).encode() + ETX


def decode_reply(data: bytes) -> Reply:
    try:
        doc = _decoder.decode(data.decode())
    except ValueError as err:  # also UnicodeDecodeError
        raise ProtocolError(f"malformed LUXI reply: {err}") from None
    except RecursionError:
        raise ProtocolError("malformed LUXI reply: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"malformed LUXI reply: expected an object, got {_kind(doc)}")
    if "success" not in doc:
        raise ProtocolError("malformed LUXI reply: missing field 'success'")
    success = doc["success"]
    if not isinstance(success, bool):
        raise ProtocolError(f"malformed LUXI reply: 'success' must be a bool, got {_kind(success)}")
    return Reply(success=success, result=doc.get("result"))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def decode_request(data: bytes) -> Request:
    from corral import luxi_server

    return luxi_server.decode_request(data)


def encode_reply(success: bool, result: Any) -> bytes:
    from corral import luxi_server

    return luxi_server.encode_reply(success, result) + ETX
