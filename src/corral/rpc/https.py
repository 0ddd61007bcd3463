"""HTTPS transport with mutual TLS: the master calling ``corral-noded``.

Layer: RPC transport (imports ``pki``). One long-lived ``aiohttp`` session
with kept-alive connections per node; each request is ``POST
https://<address>:<port>/rpc/<call>`` with the encoded argument record. The
master presents its node certificate; the node must present a certificate
of the cluster CA *for the node name called* (checked by OpenSSL inside the
handshake: ``server_hostname`` is the node name, which the certificate's
SAN carries), so a request never reaches the wrong node. Every failure —
refused, unreachable, TLS, timeout, daemon died mid-call — becomes an
:class:`~corral.errors.RpcError` naming the node, its address and the call.

:func:`enroll` hands a new node its certificates: it reaches an unenrolled
``corral-noded`` by pinning the fingerprint of its bootstrap certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from corral import pki
from corral.errors import ECode, PkiError, RpcError
from corral.paths import Paths
from corral.rpc.client import NodeTarget

DEFAULT_PORT = 1811
ENROLL_TIMEOUT = 30.0

_HEADERS = {"Content-Type": "application/json"}
_SKIP_HEADERS = ("User-Agent", "Accept-Encoding")


class _ErrorReply(msgspec.Struct):
    ok: bool
    error: Any = None


_error_reply = msgspec.json.Decoder(_ErrorReply)


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (a bare IPv6 has no port)."""
    host, port_s = address, ""
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed address {address!r}")
        port_s = rest[1:]
    elif address.count(":") == 1:
        host, _, port_s = address.partition(":")
    if not host:
        raise ValueError(f"malformed address {address!r}")
    if not port_s:
        return host, default_port
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {address!r}")
    return host, port


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(err: BaseException) -> str:
    """A short lower-case reason for a connection-level failure."""
    os_err = getattr(err, "os_error", None)
    if isinstance(os_err, OSError) and os_err.errno:
        return os.strerror(os_err.errno).lower()
    if isinstance(os_err, OSError) and os_err.strerror:
        return os_err.strerror.lower()
    if isinstance(err, ssl.SSLError) and err.reason:
        return f"TLS error: {err.reason.lower().replace('_', ' ')}"
    cause = err.__cause__ or err.__context__
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return f"TLS error: {cause.reason.lower().replace('_', ' ')}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err).strip()
    return text or type(err).__name__


def _tls_alert(err: BaseException) -> str:
    """The alert a TLS peer sent (e.g. "certificate revoked"), or ""."""
    seen: BaseException | None = err
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError) and seen.reason and "ALERT" in seen.reason:
            text = seen.reason.lower().split("alert", 1)[1].replace("_", " ").strip()
            return f"{text} (TLS alert)"
        seen = seen.__cause__ or seen.__context__
    return ""


def _translate(err: BaseException, node: str, where: str, call: str, timeout: float) -> RpcError:
    """One RpcError, naming node, address and call, for anything a request can raise."""

    def e(msg: str) -> RpcError:
        return RpcError(msg, node=node, call=call)

    if isinstance(err, aiohttp.ServerFingerprintMismatch):
        return e(
            f"the machine at {where} presented certificate sha256:{err.got.hex()}, not the "
            f"expected sha256:{err.expected.hex()} ({call} not sent): wrong join information, "
            f"or another machine answers at that address"
        )
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cert_err = err.certificate_error
        detail = getattr(cert_err, "verify_message", "") or str(cert_err)
        if "mismatch" in detail.lower():
            detail = f"the certificate there is not node {node}'s"
        return e(
            f"cannot call {call} on node {node} ({where}): its certificate was refused: {detail}"
        )
    if isinstance(err, aiohttp.ClientConnectorSSLError):
        return e(
            f"cannot call {call} on node {node} ({where}): TLS handshake failed: {_reason(err)}"
        )
    if isinstance(err, aiohttp.ClientConnectorError):
        return e(f"cannot reach node {node} ({where}) for {call}: {_reason(err)}")
    if isinstance(err, TimeoutError):  # aiohttp's timeouts are TimeoutError subclasses
        return e(f"node {node} ({where}) did not answer {call} within {timeout:.0f}s")
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return e(
            f"node {node} ({where}) closed the connection during {call} "
            f"(node daemon stopped or crashed?)"
        )
    alert = _tls_alert(err)
    if alert:
        return e(f"node {node} ({where}) refused this host's certificate for {call}: {alert}")
    if isinstance(err, ssl.SSLError) or isinstance(err.__cause__, ssl.SSLError):
        return e(f"{call} on node {node} ({where}) failed: {_reason(err)}")
    if isinstance(err, (aiohttp.ClientError, OSError)):
        return e(f"{call} on node {node} ({where}) failed: {_reason(err)}")
    if isinstance(err, ValueError):  # e.g. a node name OpenSSL cannot take as a host name
        return e(f"cannot call {call} on node {node} ({where}): {err}")
    return e(f"{call} on node {node} ({where}) failed: {err!r}")


class _Where:
    __slots__ = ("display", "url")

    def __init__(self, display: str, url: str) -> None:
        self.display = display
        self.url = url


# A node that vanishes (partition, power loss) must not hold a call for its
# whole timeout class (up to an hour): the kernel aborts a connection whose
# data stays unacknowledged, or whose idle keepalive probes go unanswered,
# for DEAD_PEER_SECONDS. A node busy with a long call still acknowledges.
DEAD_PEER_SECONDS = 10


def _dead_peer_detecting_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)
    return sock


class HttpsTransport:
    """:class:`~corral.rpc.client.Transport` to ``corral-noded`` over mutual TLS.

    ``NodeTarget.address`` is an address (the daemon listens on ``port``) or
    ``address:port`` (``[v6]:port``) for nodes listening elsewhere, e.g.
    several nodes on one host. Create it anywhere, use it from one event
    loop, :meth:`close` it at the end. :meth:`reload` re-reads the
    certificates and the CRL (after the master changed them).
    """

    def __init__(
        self,
        paths: Paths,
        port: int = DEFAULT_PORT,
        *,
        limit_per_host: int = 16,
        connect_timeout: float = 10.0,
        keepalive_timeout: float = 30.0,
    ) -> None:
        self.paths = paths
        self.port = port
        self.limit_per_host = limit_per_host
        self.connect_timeout = connect_timeout
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._where: dict[str, _Where] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            ctx = pki.client_context(self.paths)
            connector = aiohttp.TCPConnector(
                ssl=ctx,
                limit=0,
                limit_per_host=self.limit_per_host,
                keepalive_timeout=self.keepalive_timeout,
                socket_factory=_dead_peer_detecting_socket,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                skip_auto_headers=_SKIP_HEADERS,
                auto_decompress=False,
            )
            self._session = session
        return session

    def _locate(self, address: str) -> _Where:
        w = self._where.get(address)
        if w is None:
            host, port = split_address(address, self.port)
            hp = _hostport(host, port)
            w = _Where(hp, f"https://{hp}/rpc/")
            self._where[address] = w
        return w

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(total)
        if t is None:
            t = aiohttp.ClientTimeout(total=total, sock_connect=min(total, self.connect_timeout))
            self._timeouts[total] = t
        return t

    async def request(self, node: NodeTarget, name: str, body: bytes, timeout: float) -> bytes:
        try:
            where = self._locate(node.address)
        except ValueError as err:
            raise RpcError(
                f"cannot call {name} on node {node.name}: bad address: {err}",
                ECode.INVAL,
                node=node.name,
                call=name,
            ) from err
        try:
            session = self._get_session()
        except PkiError as err:
            raise RpcError(
                f"cannot call {name} on node {node.name} ({where.display}): {err}",
                node=node.name,
                call=name,
            ) from err
        try:
            async with session.post(
                where.url + quote(name, safe=""),
                data=body,
                headers=_HEADERS,
                server_hostname=node.name,
                timeout=self._timeout(timeout),
            ) as resp:
                status = resp.status
                data = await resp.read()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise _translate(err, node.name, where.display, name, timeout) from err
        if status == 200:
            return data
        # noded answers refusals (403, 404, 413, …) with an error reply: pass it on
        try:
            if not _error_reply.decode(data).ok:
                return data
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        snippet = data[:200].decode(errors="replace").strip()
        raise RpcError(
            f"node {node.name} ({where.display}) answered {name} with HTTP {status}: {snippet}",
            node=node.name,
            call=name,
        )

    async def reload(self) -> None:
        """Use the current certificates and CRL for new connections."""
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


async def _peer_digest(host: str, port: int) -> bytes:
    """sha256 of the certificate the TLS server at host:port presents (unverified)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return hashlib.sha256(der or b"").digest()


async def enroll(
    address: str,
    port: int,
    fingerprint: str,
    token: str,
    payload: Mapping[str, Any],
    timeout: float = ENROLL_TIMEOUT,
) -> None:
    """Enrol the unenrolled ``corral-noded`` at ``address``:``port``.

    ``fingerprint`` (``sha256:<hex>``) pins the node's bootstrap certificate:
    anything else answering there gets nothing. ``payload`` carries
    ``node_name``, ``cluster_name``, ``port``, ``ca_pem``, ``cert_pem``,
    ``key_pem`` and ``crl_pem``; ``token`` is the node's join token. Raises
    :class:`RpcError` (or :class:`PkiError` for a malformed fingerprint).
    """
    digest = pki.fingerprint_digest(fingerprint)
    try:
        host, port = split_address(address, port)
    except ValueError as err:
        raise RpcError(f"cannot enrol {address}: {err}", ECode.INVAL, node=address) from err
    where = _hostport(host, port)
    # Check the pin on a connection of our own first: aiohttp's own check
    # (kept below) can report a mismatch as a socket error when the peer has
    # already dropped the connection, e.g. an enrolled noded refusing us.
    try:
        got = await asyncio.wait_for(_peer_digest(host, port), timeout)
    except asyncio.CancelledError:
        raise
    except Exception as err:
        raise _translate(err, address, where, "enroll", timeout) from err
    if got != digest:
        raise RpcError(
            f"the machine at {where} presented certificate sha256:{got.hex()}, not the "
            f"expected {fingerprint} (enroll not sent): wrong join information, already "
            f"enrolled, or another machine answers at that address",
            ECode.INVAL,
            node=address,
            call="enroll",
        )
    body = msgspec.json.encode({**payload, "token": token})
    connector = aiohttp.TCPConnector(ssl=aiohttp.Fingerprint(digest), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.post(
                f"https://{where}/enroll",
                data=body,
                headers=_HEADERS,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                status = resp.status
                data = await resp.read()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise _translate(err, address, where, "enroll", timeout) from err
    try:
        reply = msgspec.json.decode(data)
    except msgspec.DecodeError:
        reply = None
    if status == 200 and isinstance(reply, dict) and reply.get("ok") is True:
        return
    message = ""
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        message = str(reply["error"].get("message", ""))
    message = message or data[:200].decode(errors="replace").strip()
    if status == 403:
        raise RpcError(
            f"the node at {where} refused the join token: {message}",
            ECode.INVAL,
            node=address,
            call="enroll",
        )
    code = ECode.STATE if status == 409 else ECode.ENVIRON if status >= 500 else ECode.INVAL
    raise RpcError(
        f"enrolment of the node at {where} failed (HTTP {status}): {message}",
        code,
        node=address,
        call="enroll",
    )
