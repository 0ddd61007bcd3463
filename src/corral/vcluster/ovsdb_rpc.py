"""A minimal OVSDB JSON-RPC client (RFC 7047) for the virtual cluster's set-up.

Layer: testing support (standard library only). Starting a chassis needs a few
round trips before any ``ovsdbapp`` connection makes sense: "does the server
answer yet", "wait until the SB has this row" (an OVSDB ``wait`` operation:
the server re-checks at every commit, so nothing here polls), a ``select``.
Every call has a deadline; nothing parses human-readable output.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

from corral.vcluster.model import VClusterError


class Rpc:
    """A minimal OVSDB JSON-RPC client (RFC 7047) with a deadline on every call."""

    def __init__(self, sock_path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(sock_path)
        self.buf = ""
        self.decoder = json.JSONDecoder()
        self.next_id = 0

    def close(self) -> None:
        self.sock.close()

    def call(self, method: str, params: list[Any]) -> Any:
        self.next_id += 1
        want = self.next_id
        self.sock.sendall(json.dumps({"method": method, "params": params, "id": want}).encode())
        while True:
            msg = self._recv()
            if msg.get("method") == "echo":  # the server's keepalive
                reply = {"result": msg.get("params", []), "error": None, "id": msg.get("id")}
                self.sock.sendall(json.dumps(reply).encode())
            elif msg.get("id") == want:
                if msg.get("error") is not None:
                    raise VClusterError(f"OVSDB {method} failed: {msg['error']}")
                return msg.get("result")

    def _recv(self) -> dict[str, Any]:
        while True:
            text = self.buf.lstrip()
            if text:
                with contextlib.suppress(ValueError):
                    msg, end = self.decoder.raw_decode(text)
                    self.buf = text[end:]
                    if not isinstance(msg, dict):
                        raise VClusterError(f"unexpected OVSDB message {msg!r}")
                    return msg
            chunk = self.sock.recv(65536)
            if not chunk:
                raise VClusterError("OVSDB server closed the connection")
            self.buf += chunk.decode()


def transact(
    sock_path: str, db: str, ops: list[dict[str, Any]], timeout: float = 10.0
) -> list[Any]:
    """One OVSDB ``transact`` on a unix socket; raise if any operation failed."""
    rpc = Rpc(sock_path, timeout)
    try:
        results = rpc.call("transact", [db, *ops])
    finally:
        rpc.close()
    if not isinstance(results, list):
        raise VClusterError(f"OVSDB transact on {db}: unexpected reply {results!r}")
    for op, res in zip(ops, results, strict=False):
        if not isinstance(res, dict) or "error" in res:
            raise VClusterError(f"OVSDB {op.get('op')} on {db}.{op.get('table')} failed: {res}")
    return results


def wait_rows(sock_path: str, db: str, table: str, where: list[Any], timeout: float) -> None:
    """Block until ``table`` has a row matching ``where`` (an OVSDB ``wait``:
    the server re-checks at every commit, so nothing here polls)."""
    op = {
        "op": "wait",
        "timeout": int(timeout * 1000),
        "table": table,
        "where": where,
        "columns": [],
        "until": "!=",
        "rows": [],
    }
    try:
        transact(sock_path, db, [op], timeout=timeout + 5)
    except (OSError, VClusterError) as err:
        raise VClusterError(f"no row {where} in {db}.{table} after {timeout:.0f}s: {err}") from err


def unix_path(remote: str) -> str:
    if not remote.startswith("unix:"):
        raise VClusterError(f"not a unix socket remote: {remote}")
    return remote[len("unix:") :]
