"""Cluster initialisation and final teardown (``gnt-cluster init/destroy``).

Layer: bootstrap (imports config store, objects, params, hypervisor). Like
Ganeti's ``bootstrap.py`` these run outside the job queue: there is no
master daemon before ``init`` nor after ``destroy``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
from typing import Any

from corral import hypervisor, params, pki
from corral.config import store
from corral.daemons import pidfile
from corral.errors import ConfigError, ECode, OpPrereqError, ParameterError
from corral.objects import Cluster, ConfigData, Node, NodeGroup
from corral.opcodes import HOSTNAME_RE
from corral.paths import Paths

# Cluster-wide paths, as every node sees them (under its root prefix, if any).
DEFAULT_FILE_STORAGE_DIR = "/srv/corral/file-storage"
DEFAULT_SHARED_FILE_STORAGE_DIR = "/srv/corral/shared-file-storage"


def default_node_name() -> str:
    return socket.gethostname().split(".")[0] or "node1"


def init_cluster(
    paths: Paths,
    cluster_name: str,
    *,
    node_name: str | None = None,
    enabled_hypervisors: list[str] | None = None,
    hvparams: dict[str, dict[str, Any]] | None = None,
    beparams: dict[str, Any] | None = None,
    nicparams: dict[str, Any] | None = None,
    diskparams: dict[str, dict[str, Any]] | None = None,
    enabled_disk_templates: list[str] | None = None,
    mac_prefix: str = "aa:00:00",
    master_ip: str = "127.0.0.1",
    candidate_pool_size: int = 10,
    file_storage_dir: str | None = None,
    shared_file_storage_dir: str | None = None,
    noded_port: int = 1811,
) -> ConfigData:
    """Validate everything, then write the first ``config.data``."""
    import re

    if not re.match(HOSTNAME_RE, cluster_name):
        raise ParameterError("cluster_name", f"invalid cluster name {cluster_name!r}")
    node_name = node_name or default_node_name()
    if not re.match(HOSTNAME_RE, node_name):
        raise ParameterError("node_name", f"invalid node name {node_name!r}")
    if paths.config_file.exists():
        raise OpPrereqError(
            f"a cluster is already initialised here ({paths.config_file}); destroy it first",
            ECode.EXISTS,
        )
    if not re.match(r"^[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$", mac_prefix):
        raise ParameterError("mac_prefix", f"invalid MAC prefix {mac_prefix!r}")
    if int(mac_prefix[:2], 16) & 1:
        raise ParameterError("mac_prefix", "the MAC prefix must not be multicast")
    hvs = enabled_hypervisors or ["fake"]
    for hv in hvs:
        hypervisor.hv_class(hv, "enabled_hypervisors")
    checked_hv: dict[str, dict[str, Any]] = {}
    for hv, values in (hvparams or {}).items():
        g = hypervisor.params_for(hv)
        checked_hv[hv] = {
            k: v for k, v in g.check_overrides(values, f"hvparams/{hv}").items() if v is not None
        }
        g.fill(checked_hv[hv])
    be = {
        k: v
        for k, v in params.BE.check_overrides(beparams or {}, "beparams").items()
        if v is not None
    }
    filled_be = params.BE.fill(be)
    if filled_be.minmem > filled_be.maxmem:
        raise ParameterError("beparams/minmem", "minmem is larger than maxmem")
    nic = {
        k: v
        for k, v in params.NIC.check_overrides(nicparams or {}, "nicparams").items()
        if v is not None
    }
    checked_disk: dict[str, dict[str, Any]] = {}
    for tpl, values in (diskparams or {}).items():
        g = params.disk_group(tpl, "diskparams")
        checked_disk[tpl] = {
            k: v for k, v in g.check_overrides(values, f"diskparams/{tpl}").items() if v is not None
        }
    templates = enabled_disk_templates or list(params.DISK_TEMPLATES)
    for tpl in templates:
        params.disk_group(tpl, "enabled_disk_templates")

    if not 1 <= noded_port <= 65535:
        raise ParameterError("noded_port", f"invalid port {noded_port}")
    ca_cert, ca_key = pki.create_ca(cluster_name)
    node_cert, node_key = pki.issue_node_cert(ca_cert, ca_key, node_name, [master_ip])
    crl = pki.make_crl(ca_cert, ca_key, [])
    group = NodeGroup(name="default")
    node = Node(
        name=node_name,
        group=group.uuid,
        primary_ip=master_ip,
        secondary_ip=master_ip,
        master_candidate=True,
        cert_serial=pki.cert_serial(node_cert),
    )
    cluster = Cluster(
        cluster_name=cluster_name,
        master_node=node.uuid,
        master_ip=master_ip,
        enabled_hypervisors=hvs,
        hvparams=checked_hv,
        beparams={"default": be},
        nicparams={"default": nic},
        diskparams=checked_disk,
        enabled_disk_templates=templates,
        mac_prefix=mac_prefix,
        candidate_pool_size=candidate_pool_size,
        file_storage_dir=file_storage_dir or DEFAULT_FILE_STORAGE_DIR,
        shared_file_storage_dir=shared_file_storage_dir or DEFAULT_SHARED_FILE_STORAGE_DIR,
        noded_port=noded_port,
    )
    data = ConfigData(cluster=cluster, nodegroups={group.uuid: group}, nodes={node.uuid: node})
    paths.ensure()
    os.makedirs(paths.host_path(cluster.file_storage_dir), exist_ok=True)
    os.makedirs(paths.host_path(cluster.shared_file_storage_dir), exist_ok=True)
    write_node_files(
        paths, node_name, cluster_name, noded_port, ca_cert, node_cert, node_key, crl, ca_key
    )
    store.save(paths.config_file, data)
    return data


def write_node_files(
    paths: Paths,
    node_name: str,
    cluster_name: str,
    port: int,
    ca_cert: str,
    node_cert: str,
    node_key: str,
    crl: str,
    ca_key: str | None,
) -> None:
    """A node's PKI files and identity (what enrolment writes on other nodes)."""
    paths.ensure()
    store.write_atomic(paths.ca_cert, ca_cert.encode(), mode=0o644)
    store.write_atomic(paths.node_cert, node_cert.encode(), mode=0o644)
    store.write_atomic(paths.node_key, node_key.encode(), mode=0o600)
    store.write_atomic(paths.crl, crl.encode(), mode=0o644)
    if ca_key is not None:
        store.write_atomic(paths.ca_key, ca_key.encode(), mode=0o600)
    identity = {"node": node_name, "cluster": cluster_name, "port": port}
    store.write_atomic(paths.node_identity, json.dumps(identity).encode(), mode=0o644)


def masterd_running(paths: Paths) -> int | None:
    """PID of this root's master daemon, or None."""
    return pidfile.running(paths.masterd_pidfile)


def stop_masterd(paths: Paths, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Signal the master daemon of this root (by its pid file) and wait for it."""
    return pidfile.stop(paths.masterd_pidfile, "corral-masterd", timeout, sig)


def remove_cluster_state(paths: Paths) -> None:
    """Remove the config and job queue of a destroyed cluster (disks are long gone)."""
    if not paths.config_file.exists():
        raise ConfigError("no cluster to destroy here", ECode.NOENT)
    for p in (paths.config_file, paths.masterd_pidfile, paths.master_socket, paths.node_identity):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    shutil.rmtree(paths.queue_db.parent, ignore_errors=True)
    shutil.rmtree(paths.pki_dir, ignore_errors=True)
