"""The virtual cluster's model: nodes, names, addresses and its state file.

Layer: testing support (imports ``paths``, ``errors``). What :mod:`cluster`
builds and removes is described by a :class:`VCluster`, saved atomically in
``<base>/vcluster.json`` after every step so ``down`` can undo it after a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import CorralError, ECode
from corral.paths import Paths
from corral.vcluster import net
from corral.vcluster.proc import ProcRecord

BIN = Path(sys.executable).parent
DEFAULT_BASE = Path("/var/tmp/corral-vcluster")
STATE_FILE = "vcluster.json"
PROC_FILE = "vcluster-procs.json"  # per node root: processes started there
MGMT_NET = "198.51.100"
MGMT_PREFIXLEN = 24
VM_NETWORK = "203.0.113.0/24"
NODED_PORT = 1811
MAX_NODES = 200
SWITCH_BRIDGES = ("mgmt", "vmnet")
NODE_BRIDGE = "br0"
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,8}-")
# Where the cluster keeps ``sharedfile`` disks by default, as every node sees it:
# bootstrap.DEFAULT_SHARED_FILE_STORAGE_DIR (not imported: bootstrap pulls in the PKI).
SHARED_FILE_STORAGE_DIR = "/srv/corral/shared-file-storage"
SHARED_DIR_SUFFIX = "shared-storage"  # <base>/<prefix>shared-storage


class VClusterError(CorralError):
    """Building, using or removing a virtual cluster failed."""

    default_code = ECode.ENVIRON


# --- model --------------------------------------------------------------------------


@dataclass
class VNode:
    index: int
    name: str
    ns: str
    mgmt_ip: str
    root: str
    noded_pid: int | None = None

    @property
    def paths(self) -> Paths:
        return Paths(Path(self.root))

    @property
    def env(self) -> dict[str, str]:
        """The host environment with ``CORRAL_ROOT`` set to this node's root."""
        return {**os.environ, "CORRAL_ROOT": self.root}


@dataclass
class VCluster:
    prefix: str
    base: Path
    nodes: list[VNode] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # created, in order
    links: list[dict[str, str]] = field(default_factory=list)  # {"ns", "name", "kind"}
    dirs: list[str] = field(default_factory=list)
    processes: list[ProcRecord] = field(default_factory=list)
    complete: bool = False
    ovn: bool = False  # OVN central + a chassis per node (see corral.vcluster.ovn)

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}sw"

    @property
    def state_file(self) -> Path:
        return self.base / STATE_FILE

    @property
    def shared_dir(self) -> Path:
        """The one directory behind every node's shared file storage path.

        Named with the prefix, like the node roots, so ``down`` can find it
        (and remove nothing else) even without the state file.
        """
        return self.base / f"{self.prefix}{SHARED_DIR_SUFFIX}"

    @property
    def master(self) -> VNode:
        return self.nodes[0]

    def node(self, key: int | str) -> VNode:
        for n in self.nodes:
            if key in (n.index, n.name, n.ns):
                return n
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "prefix": self.prefix,
            "base": str(self.base),
            "switch_ns": self.switch_ns,
            "bridges": {"switch": list(SWITCH_BRIDGES), "node": NODE_BRIDGE},
            "mgmt_network": f"{MGMT_NET}.0/{MGMT_PREFIXLEN}",
            "vm_network": VM_NETWORK,
            "shared_storage": str(self.shared_dir),
            "nodes": [vars(n) for n in self.nodes],
            "namespaces": self.namespaces,
            "links": self.links,
            "dirs": self.dirs,
            "processes": [p.to_dict() for p in self.processes],
            "complete": self.complete,
            "ovn": self.ovn,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VCluster:
        return cls(
            prefix=str(d["prefix"]),
            base=Path(d["base"]),
            nodes=[VNode(**n) for n in d.get("nodes", [])],
            namespaces=list(d.get("namespaces", [])),
            links=list(d.get("links", [])),
            dirs=list(d.get("dirs", [])),
            processes=[ProcRecord.from_dict(p) for p in d.get("processes", [])],
            complete=bool(d.get("complete", False)),
            ovn=bool(d.get("ovn", False)),
        )

    def save(self) -> None:
        _atomic_write(self.state_file, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, base: Path) -> VCluster:
        try:
            return cls.from_dict(json.loads((base / STATE_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise VClusterError(f"no usable state file in {base}: {err}") from err


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mac(prefix: str, role: int, index: int) -> str:
    """A stable, locally administered unicast MAC for one of our bridges."""
    h = hashlib.sha256(prefix.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, h[0], h[1], h[2], role, index))


def normalize_prefix(prefix: str) -> str:
    p = prefix if prefix.endswith("-") else prefix + "-"
    if not PREFIX_RE.fullmatch(p):
        raise VClusterError(
            f"bad prefix {prefix!r}: a lowercase letter, 1-8 more letters or digits, then '-'"
        )
    return p


def new_prefix() -> str:
    while True:
        p = f"cv{secrets.token_hex(2)}-"
        if not net.list_ns(p) and not (DEFAULT_BASE / p).exists():
            return p
