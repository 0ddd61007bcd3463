"""A node's identity in its cluster, and its join information before that.

Layer: daemon support. ``node-identity.json`` says which node of which
cluster this is once enrolled; before enrolment the node has a bootstrap
certificate and a one-time join token, printed together by
``corral-noded --join-info``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket

import msgspec

from corral import pki
from corral.config.store import write_atomic
from corral.errors import PkiError
from corral.paths import Paths
from corral.rpc.https import DEFAULT_PORT

log = logging.getLogger("corral.noded")


class Identity(msgspec.Struct, frozen=True):
    """``node-identity.json``: who this node is once enrolled."""

    node: str
    cluster: str
    port: int = DEFAULT_PORT


class EnrollRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str
    node_name: str
    cluster_name: str
    ca_pem: str
    cert_pem: str
    key_pem: str
    port: int = DEFAULT_PORT
    crl_pem: str = ""
    # Master candidates get the CA key: a candidate may become master and enrol nodes.
    ca_key_pem: str = ""


def read_identity(paths: Paths) -> Identity | None:
    try:
        return msgspec.json.decode(paths.node_identity.read_bytes(), type=Identity)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def enrolled_identity(paths: Paths) -> Identity | None:
    """The node's identity if it is enrolled (identity, certificate, key and CA present)."""
    ident = read_identity(paths)
    if ident is None:
        return None
    if all(p.exists() for p in (paths.node_cert, paths.node_key, paths.ca_cert)):
        return ident
    return None


def ensure_join_info(paths: Paths) -> tuple[str, str]:
    """``(bootstrap certificate fingerprint, join token)``, created if missing."""
    paths.pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        lock = os.open(paths.pki_dir / ".bootstrap.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise PkiError(f"cannot write to {paths.pki_dir}: {err.strerror}") from err
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (paths.bootstrap_cert.exists() and paths.bootstrap_key.exists()):
            cert, key = pki.self_signed(f"corral-noded bootstrap {socket.gethostname()}")
            write_atomic(paths.bootstrap_key, key.encode(), mode=0o600)
            write_atomic(paths.bootstrap_cert, cert.encode(), mode=0o644)
        if not paths.join_token.exists():
            write_atomic(paths.join_token, secrets.token_urlsafe(24).encode(), mode=0o600)
        fp = pki.fingerprint(paths.bootstrap_cert.read_bytes())
        token = paths.join_token.read_text().strip()
    except OSError as err:
        raise PkiError(f"cannot create the bootstrap certificate or join token: {err}") from err
    finally:
        os.close(lock)
    return fp, token
