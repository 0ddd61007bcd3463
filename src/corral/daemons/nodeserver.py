"""The node daemon's HTTPS server: enrolment mode and mutual-TLS RPC mode.

Layer: daemon. :class:`NodeDaemon` owns the listening socket and switches
between two modes without closing it: *unenrolled* (bootstrap certificate,
``POST /enroll`` only) and *enrolled* (cluster certificate, clients must
present a certificate the cluster CA signed and the CRL does not list;
``POST /rpc/<call>`` goes to the backend dispatcher). ``noded.py`` runs it
as a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
import weakref
from collections.abc import Coroutine
from typing import Any

import msgspec
from aiohttp import web

from corral import pki
from corral.backend.dispatch import MAX_BODY, dispatch, error_reply
from corral.backend.node import NodeBackend
from corral.config.store import write_atomic
from corral.daemons import console
from corral.daemons.nodeid import (
    EnrollRequest,
    Identity,
    enrolled_identity,
    ensure_join_info,
)
from corral.errors import CorralError, DaemonError, ECode, PkiError, ProtocolError, RpcError
from corral.paths import Paths

log = logging.getLogger("corral.noded")

DEFAULT_BIND = "0.0.0.0"
MAX_ENROLL_BODY = 1024 * 1024
HANDSHAKE_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 120.0  # longer than the client's, so the client closes idle ones first
SHUTDOWN_TIMEOUT = 5.0
BACKLOG = 512

ENROLLED = "enrolled"
UNENROLLED = "unenrolled"


def _error(status: int, err: CorralError) -> web.Response:
    return web.Response(status=status, body=error_reply(err), content_type="application/json")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as err:
        raise DaemonError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.setblocking(False)
    return sock


class NodeDaemon:
    """The HTTPS server of one node, in either mode, switching without a restart."""

    def __init__(self, paths: Paths, bind: str, port: int) -> None:
        self.paths = paths
        self.bind = bind
        self.port = port
        self.mode = UNENROLLED
        self.identity: Identity | None = None
        self.backend: NodeBackend | None = None
        self.stop_requested = asyncio.Event()
        self._ctx: ssl.SSLContext | None = None
        # Contexts whose connections are authenticated cluster members.
        self._cluster_ctxs: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
        self._revoked: frozenset[int] = frozenset()
        self._crl_good: bytes | None = None
        self._peer_serials: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._runner: web.AppRunner | None = None
        self._listen_lock = asyncio.Lock()
        self._enroll_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- modes ---------------------------------------------------------------------------

    def _become_enrolled(self, ident: Identity) -> None:
        ctx = pki.server_context(self.paths)
        try:
            crl = self.paths.crl.read_bytes()
        except FileNotFoundError:
            crl = b""
        except OSError as err:
            raise PkiError(f"cannot read the CRL {self.paths.crl}: {err.strerror}") from err
        revoked = frozenset(pki.crl_revoked_serials(crl)) if crl.strip() else frozenset()
        backend = NodeBackend(self.paths, ident.node)
        backend.on_crl_update.append(self._on_crl_update)
        backend.on_leave.append(self._on_leave)
        self._cluster_ctxs = weakref.WeakSet([ctx])
        self._revoked = revoked
        self._crl_good = crl
        self._ctx = ctx
        self.backend = backend
        self.identity = ident
        self.mode = ENROLLED
        with contextlib.suppress(FileNotFoundError):
            self.paths.join_token.unlink()
        log.info(
            "enrolled as node %s of cluster %s (%d revoked certificates)",
            ident.node,
            ident.cluster,
            len(revoked),
        )

    def _become_unenrolled(self) -> None:
        self.mode = UNENROLLED
        self.backend = None
        self.identity = None
        self._cluster_ctxs = weakref.WeakSet()
        self._revoked = frozenset()
        fp, _ = ensure_join_info(self.paths)
        self._ctx = pki.bootstrap_server_context(
            self.paths.bootstrap_cert, self.paths.bootstrap_key
        )
        log.info("not enrolled: serving /enroll only, bootstrap certificate %s", fp)

    def _on_crl_update(self) -> None:
        """Backend callback (inside ``update_crl``): apply the new CRL file."""
        try:
            crl = self.paths.crl.read_bytes()
            revoked = frozenset(pki.crl_revoked_serials(crl))
            ctx = pki.server_context(self.paths)
        except (PkiError, OSError) as err:
            # Put the last good CRL back so that a restart does not fail either.
            if self._crl_good:
                write_atomic(self.paths.crl, self._crl_good, mode=0o644)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.paths.crl.unlink()
            if isinstance(err, PkiError):
                raise
            raise PkiError(f"cannot read the CRL {self.paths.crl}: {err}") from err
        self._crl_good = crl
        self._revoked = revoked
        self._cluster_ctxs.add(ctx)
        self._ctx = ctx
        self._switch_listener()
        log.info("installed a new CRL (%d revoked certificates)", len(revoked))

    def _on_leave(self) -> None:
        """Backend callback (inside ``node_leave``): forget the cluster, wait for a new one."""
        log.info("removed from cluster %s", self.identity.cluster if self.identity else "?")
        try:
            self._become_unenrolled()
        except CorralError as err:
            log.error("cannot return to unenrolled mode: %s; stopping", err)
            self.mode = UNENROLLED
            self.backend = None
            self._cluster_ctxs = weakref.WeakSet()
            self.stop_requested.set()
            return
        self._drop_connections()
        self._switch_listener()

    def _drop_connections(self) -> None:
        """Close every kept-alive connection once its current request is answered.

        They were authenticated for the cluster this node just left (or for the
        bootstrap mode it just ended); clients must reconnect and handshake again.
        """
        server = self._runner.server if self._runner is not None else None
        for conn in list(server.connections if server is not None else []):
            conn.close()

    # --- the listener ----------------------------------------------------------------------

    async def start(self) -> None:
        ident = enrolled_identity(self.paths)
        if ident is not None:
            self._become_enrolled(ident)
        else:
            self._become_unenrolled()
        self._sock = _bind(self.bind, self.port)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/rpc/{name}", self._rpc)
        app.router.add_route("*", "/enroll", self._enroll)
        app.router.add_route("GET", "/console/{instance}", self._console)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await self._runner.setup()
        await self._listen()
        if self.backend is not None:
            self._spawn(self.backend.startup())
        log.info("corral-noded (%s) listening on %s:%d", self.mode, self.bind, self.port)

    def _switch_listener(self) -> None:
        """Stop accepting with the old context now; accept with the new one next.

        Synchronous on purpose: once the call that caused the switch replies,
        no connection is accepted with the old context. Connections that
        arrive in between wait in the kernel's accept queue.
        """
        if self._server is not None:
            self._server.close()
            self._server = None
            self._server_ctx = None
        self._spawn(self._listen())

    async def _listen(self) -> None:
        async with self._listen_lock:
            while not self._closing:
                ctx = self._ctx
                if self._server is not None and self._server_ctx is ctx:
                    return
                if self._server is not None:
                    self._server.close()
                    self._server = None
                assert self._sock is not None and self._runner is not None and ctx is not None
                handler = self._runner.server
                assert handler is not None
                # A duplicate of the listening socket: closing the old server
                # closes its duplicate only; the socket and its queue live on.
                sock = self._sock.dup()
                try:
                    server = await asyncio.get_running_loop().create_server(
                        handler,
                        sock=sock,
                        ssl=ctx,
                        backlog=BACKLOG,
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                        start_serving=False,
                    )
                except BaseException:
                    sock.close()
                    raise
                if self._ctx is not ctx or self._closing:
                    server.close()
                    continue
                self._server = server
                self._server_ctx = ctx
                await server.start_serving()
                return

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("cannot listen: %s; stopping", t.exception())
                self.stop_requested.set()

        task.add_done_callback(done)

    async def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.backend is not None:
            await self.backend.shutdown()
        if self._sock is not None:
            self._sock.close()

    # --- requests ----------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> str | None:
        """Why this connection may not make RPCs, or None."""
        if self.mode != ENROLLED:
            return "this node is not enrolled in a cluster"
        transport = request.transport
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        if sslobj is None or sslobj.context not in self._cluster_ctxs:
            return "this connection is not authenticated with a cluster certificate"
        serial = self._peer_serials.get(sslobj)
        if serial is None:
            der = sslobj.getpeercert(binary_form=True)
            if not der:
                return "no client certificate"
            try:
                serial = pki.der_serial(der)
            except PkiError:
                return "unreadable client certificate"
            self._peer_serials[sslobj] = serial
        if serial in self._revoked:
            return "the client certificate has been revoked"
        return None

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.method != "POST":
            return _error(405, ProtocolError(f"{request.method} not allowed; POST /rpc/{name}"))
        refusal = self._refusal(request)
        backend = self.backend
        if refusal is not None or backend is None:
            resp = _error(403, RpcError(refusal or "not enrolled", ECode.STATE, call=name))
            resp.force_close()
            return resp
        size = request.content_length
        if size is not None and size > MAX_BODY:
            return _error(413, ProtocolError(f"request body too large ({size} bytes)"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, ProtocolError(f"request body larger than {MAX_BODY} bytes"))
        reply = await dispatch(backend, name, body)
        return web.Response(body=reply, content_type="application/json")

    async def _console(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None or self.backend is None:
            return _error(403, RpcError(refusal or "not enrolled", ECode.STATE, call="console"))
        return await console.serve(request, self.backend)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(404, ProtocolError(f"no such resource: {request.path[:100]}", ECode.NOENT))

    async def _enroll(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _error(405, ProtocolError(f"{request.method} not allowed; POST /enroll"))
        if self.mode == ENROLLED:
            return _error(409, ProtocolError("this node is already enrolled", ECode.STATE))
        size = request.content_length
        if size is not None and size > MAX_ENROLL_BODY:
            return _error(413, ProtocolError(f"enrolment request too large ({size} bytes)"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, ProtocolError("enrolment request too large"))
        if len(body) > MAX_ENROLL_BODY:
            return _error(413, ProtocolError("enrolment request too large"))
        try:
            req = msgspec.json.decode(body, type=EnrollRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            return _error(400, ProtocolError(f"invalid enrolment request: {err}"))
        async with self._enroll_lock:
            if self.mode == ENROLLED:
                return _error(409, ProtocolError("this node is already enrolled", ECode.STATE))
            try:
                expected = self.paths.join_token.read_bytes().strip()
            except OSError:
                expected = b""
            if not expected or not hmac.compare_digest(req.token.encode(), expected):
                log.warning("enrolment refused: wrong join token (from %s)", request.remote)
                return _error(403, ProtocolError("wrong join token", ECode.INVAL))
            if not 0 < req.port < 65536 or not req.node_name or not req.cluster_name:
                return _error(400, ProtocolError("invalid node name, cluster name or port"))
            try:
                pki.check_node_bundle(
                    req.ca_pem, req.cert_pem, req.key_pem, req.crl_pem, req.node_name
                )
                if req.ca_key_pem:
                    pki.check_ca_key(req.ca_pem, req.ca_key_pem)
            except PkiError as err:
                return _error(400, err)
            ident = Identity(node=req.node_name, cluster=req.cluster_name, port=req.port)
            try:
                self._install(req, ident)
                self._become_enrolled(ident)
            except (CorralError, OSError) as err:
                log.error("enrolment failed: %s", err)
                self._uninstall()
                with contextlib.suppress(CorralError):
                    self._become_unenrolled()
                return _error(500, PkiError(f"enrolment failed on the node: {err}"))
            # The reply goes out on this (bootstrap) connection before the
            # listener switches to the cluster context.
            resp = web.Response(body=b'{"ok":true}', content_type="application/json")
            resp.force_close()
            try:
                await resp.prepare(request)
                await resp.write_eof()
            finally:  # enrolled even if the caller went away meanwhile
                self._drop_connections()
                self._switch_listener()
            return resp

    def _install(self, req: EnrollRequest, ident: Identity) -> None:
        p = self.paths
        p.pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        p.data_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(p.ca_cert, req.ca_pem.encode(), mode=0o644)
        if req.crl_pem:
            write_atomic(p.crl, req.crl_pem.encode(), mode=0o644)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.crl.unlink()
        write_atomic(p.node_key, req.key_pem.encode(), mode=0o600)
        write_atomic(p.node_cert, req.cert_pem.encode(), mode=0o644)
        if req.ca_key_pem:
            write_atomic(p.ca_key, req.ca_key_pem.encode(), mode=0o600)
        write_atomic(p.node_identity, msgspec.json.encode(ident), mode=0o644)

    def _uninstall(self) -> None:
        p = self.paths
        for f in (p.node_identity, p.node_cert, p.node_key, p.ca_cert, p.crl, p.ca_key):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
