"""``corral-noded``: the node daemon, serving node RPCs over HTTPS with mutual TLS.

Layer: daemon (imports ``backend``, ``pki``). Two modes:

* **enrolled** (the node has its certificate, the CA, and an identity):
  ``POST /rpc/<call>`` runs the backend function of that call. Clients must
  present a certificate of the cluster CA that the CRL does not list; the
  TLS handshake refuses anything else. A new CRL (RPC ``update_crl``) takes
  effect for the next connection, without a restart: the listener is
  re-created on the same socket with a fresh TLS context (the kernel's
  accept queue keeps connections arriving meanwhile), and requests on
  connections opened before are checked against the new revocation list.
* **unenrolled** (a fresh node, or one removed from its cluster): serves
  only ``POST /enroll`` with a self-signed bootstrap certificate. The
  master pins that certificate's fingerprint and presents the node's join
  token (``corral-noded --join-info`` prints both); the node stores the
  certificates it is given and switches to enrolled mode.

Only one noded runs per root (an exclusive lock on the pid file). Bad
input gets an error reply; the daemon keeps serving.

Usage: ``corral-noded [-f] [--bind ADDR] [--port PORT]`` — without ``-f``
it starts itself in the background and returns once the port answers;
``corral-noded --join-info`` prints ``<fingerprint>:<token>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time

from corral.backend import load as load_backend
from corral.daemons import pidfile
from corral.daemons.nodeid import (
    enrolled_identity,
    ensure_join_info,
)
from corral.daemons.nodeserver import DEFAULT_BIND, NodeDaemon
from corral.daemons.tls_alerts import send_tls_alerts
from corral.errors import CorralError, DaemonError
from corral.paths import Paths
from corral.rpc.https import DEFAULT_PORT

log = logging.getLogger("corral.noded")

# --- process management ------------------------------------------------------------------


def running(paths: Paths) -> int | None:
    """PID of this root's node daemon, or None."""
    return pidfile.running(paths.noded_pidfile)


def stop(paths: Paths, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Signal this root's node daemon (found by its pid file) and wait until it is gone."""
    return pidfile.stop(paths.noded_pidfile, "corral-noded", timeout, sig)


async def serve(paths: Paths, bind: str, port: int, ready_fd: int | None = None) -> None:
    load_backend()
    send_tls_alerts()
    daemon = NodeDaemon(paths, bind, port)
    try:
        await daemon.start()
    except BaseException:
        await daemon.stop()
        raise
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"ready {port}\n".encode())
            os.close(ready_fd)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop_requested.set)
    await daemon.stop_requested.wait()
    log.info("shutting down")
    await daemon.stop()


def _effective_port(paths: Paths, port: int | None) -> int:
    if port is not None:
        return port
    ident = enrolled_identity(paths)
    return ident.port if ident is not None else DEFAULT_PORT


def run_foreground(paths: Paths, bind: str, port: int | None, ready_fd: int | None = None) -> int:
    paths.ensure()
    return pidfile.run_foreground(
        "corral-noded",
        paths.noded_pidfile,
        paths.noded_log,
        lambda: serve(paths, bind, _effective_port(paths, port), ready_fd),
    )


def _tls_answers(host: str, port: int) -> bool:
    """Whether a TLS server answers a handshake there (refusing us counts)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=2.0) as raw,
            ctx.wrap_socket(raw),
        ):
            return True
    except ssl.SSLError:
        return True
    except OSError:
        return False


def start_background(
    paths: Paths,
    bind: str = DEFAULT_BIND,
    port: int | None = None,
    netns: str | None = None,
    timeout: float = 30.0,
) -> int:
    """Start noded detached (in network namespace ``netns`` if given).

    Returns its pid once it listens and, outside a namespace, once a TLS
    handshake on its port succeeds.
    """
    paths.ensure()
    rfd, wfd = os.pipe()
    cmd = [sys.executable, "-m", "corral.daemons.noded", "-f", "--bind", bind]
    cmd += ["--ready-fd", str(wfd)]
    if port is not None:
        cmd += ["--port", str(port)]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    errpath = paths.log_dir / "noded.stderr"
    try:
        with open(errpath, "ab") as errlog:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=errlog,
                stderr=errlog,
                start_new_session=True,
                pass_fds=(wfd,),
                env={**os.environ, "CORRAL_ROOT": str(paths.root)},
            )
    except OSError as err:
        os.close(rfd)
        raise DaemonError(f"cannot start corral-noded: {err}") from err
    finally:
        os.close(wfd)
    deadline = time.monotonic() + timeout
    try:
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonError(f"corral-noded did not start within {timeout:.0f}s")
            ready, _, _ = select.select([rfd], [], [], left)
            if ready:
                chunk = os.read(rfd, 64)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(rfd)
    if not data.startswith(b"ready "):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        tail = errpath.read_text(errors="replace")[-500:].strip()
        raise DaemonError(f"corral-noded exited with status {proc.returncode}: {tail}")
    real_port = int(data.split()[1])
    if netns is None:
        host = "127.0.0.1" if bind in ("0.0.0.0", "") else "::1" if bind == "::" else bind
        while not _tls_answers(host, real_port):
            if time.monotonic() > deadline:
                raise DaemonError(f"corral-noded does not answer on {host}:{real_port}")
            time.sleep(0.02)
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="corral-noded", description=__doc__.splitlines()[0])
    p.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    p.add_argument("--bind", default=DEFAULT_BIND, help="address to listen on (default: all)")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"TCP port (default: the enrolled port, else {DEFAULT_PORT})",
    )
    p.add_argument(
        "--join-info",
        action="store_true",
        help="print <bootstrap certificate fingerprint>:<join token> for gnt-node add --join",
    )
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    paths = Paths.from_env()
    if args.join_info:
        ident = enrolled_identity(paths)
        if ident is not None:
            print(
                f"corral-noded: this node is already enrolled as {ident.node} "
                f"in cluster {ident.cluster}",
                file=sys.stderr,
            )
            return 1
        try:
            paths.ensure()
            fp, token = ensure_join_info(paths)
        except (CorralError, OSError) as err:
            print(f"corral-noded: {err}", file=sys.stderr)
            return 1
        print(f"{fp}:{token}")
        return 0
    if args.foreground:
        return run_foreground(paths, args.bind, args.port, args.ready_fd)
    try:
        pid = start_background(paths, args.bind, args.port)
    except CorralError as err:
        print(f"corral-noded: {err}", file=sys.stderr)
        return 1
    print(f"corral-noded started (pid {pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
