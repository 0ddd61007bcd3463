"""Where state lives, under one root prefix.

Layer: bottom. ``CORRAL_ROOT`` (default ``/``) prefixes every path, so tests,
the virtual cluster and several clusters coexist on one host. A real install
uses ``/etc/corral``, ``/var/lib/corral``, ``/run/corral``, ``/var/log/corral``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from corral import layout


# A NamedTuple, not a dataclass: importing dataclasses (which imports inspect)
# costs ~10 ms of the start-up of every command that needs paths (gnt-cluster
# init, the daemons). Everyday gnt-* commands do without: see corral.layout.
class Paths(NamedTuple):
    root: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get(layout.ROOT_ENV) or "/"))

    @property
    def conf_dir(self) -> Path:
        return self.root / "etc/corral"

    @property
    def data_dir(self) -> Path:
        return self.root / "var/lib/corral"

    @property
    def run_dir(self) -> Path:
        return self.root / "run/corral"

    @property
    def log_dir(self) -> Path:
        return self.root / "var/log/corral"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.data"

    @property
    def queue_db(self) -> Path:
        return self.data_dir / "queue/jobs.sqlite"

    @property
    def master_socket(self) -> Path:
        return self.root / layout.MASTER_SOCKET

    @property
    def masterd_pidfile(self) -> Path:
        return self.run_dir / "corral-masterd.pid"

    @property
    def masterd_log(self) -> Path:
        return self.log_dir / "masterd.log"

    @property
    def hooks_dir(self) -> Path:
        return self.conf_dir / "hooks"

    @property
    def file_storage_dir(self) -> Path:
        return self.root / "srv/corral/file-storage"

    @property
    def shared_file_storage_dir(self) -> Path:
        return self.root / "srv/corral/shared-file-storage"

    # --- node identity and the cluster PKI (corral-noded) ---------------------

    @property
    def pki_dir(self) -> Path:
        return self.conf_dir / "pki"

    @property
    def ca_cert(self) -> Path:
        """The cluster CA certificate (every node)."""
        return self.pki_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The cluster CA key (master and master candidates only)."""
        return self.pki_dir / "ca.key"

    @property
    def node_cert(self) -> Path:
        """This node's certificate, signed by the cluster CA."""
        return self.pki_dir / "node.pem"

    @property
    def node_key(self) -> Path:
        return self.pki_dir / "node.key"

    @property
    def crl(self) -> Path:
        """Revoked node certificates (PEM CRL signed by the CA)."""
        return self.pki_dir / "crl.pem"

    @property
    def bootstrap_cert(self) -> Path:
        """Self-signed certificate an unenrolled noded serves ``/enroll`` with."""
        return self.pki_dir / "bootstrap.pem"

    @property
    def bootstrap_key(self) -> Path:
        return self.pki_dir / "bootstrap.key"

    @property
    def join_token(self) -> Path:
        """One-time secret the master must present to enrol this node."""
        return self.pki_dir / "join-token"

    @property
    def node_identity(self) -> Path:
        """JSON: this node's name, cluster name and noded port once enrolled."""
        return self.data_dir / "node-identity.json"

    @property
    def noded_pidfile(self) -> Path:
        return self.run_dir / "corral-noded.pid"

    @property
    def noded_log(self) -> Path:
        return self.log_dir / "noded.log"

    def host_path(self, path: str) -> Path:
        """Where a cluster-wide path (``/srv/corral/…``) lives under this root.

        The config holds paths as every node sees them; a node with a root
        prefix (tests, the virtual cluster) finds them under its prefix.
        """
        p = Path(path)
        if self.root == Path("/") or not p.is_absolute():
            return p
        return self.root / p.relative_to("/")

    def hv_run_dir(self, hypervisor: str) -> Path:
        return self.run_dir / f"{hypervisor}-hypervisor"

    def ensure(self) -> None:
        for d in (
            self.conf_dir,
            self.data_dir,
            self.run_dir,
            self.log_dir,
            self.queue_db.parent,
            self.master_socket.parent,
            self.hooks_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        self.pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
