"""Tell refused TLS clients why (a fix for asyncio's TLS server).

Layer: daemon support; used by ``corral-noded`` only.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

log = logging.getLogger("corral.noded")


def send_tls_alerts() -> None:
    """Make asyncio's TLS server tell a refused client why (CPython gh-98078).

    asyncio's ``SSLProtocol`` drops the fatal alert OpenSSL queues when a
    handshake fails (unknown CA, certificate required, revoked), so the
    client sees the connection just close. Flush the outgoing buffer before
    the failure is handled, as the upstream fix does; harmless where that
    fix is present, skipped if asyncio's internals look different.
    """
    from asyncio import sslproto

    cls: Any = sslproto.SSLProtocol
    orig = getattr(cls, "_on_handshake_complete", None)
    if orig is None or getattr(orig, "_corral_flushes_alerts", False):
        return
    if not hasattr(cls, "_process_outgoing"):
        return

    def on_handshake_complete(self: Any, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()
            if isinstance(handshake_exc, ssl.SSLCertVerificationError):
                peer = None
                with contextlib.suppress(Exception):
                    peer = self._transport.get_extra_info("peername")
                log.warning(
                    "refused TLS client %s: %s",
                    peer[0] if peer else "?",
                    handshake_exc.verify_message or handshake_exc.reason,
                )
        orig(self, handshake_exc)

    on_handshake_complete._corral_flushes_alerts = True  # type: ignore[attr-defined]
    cls._on_handshake_complete = on_handshake_complete
