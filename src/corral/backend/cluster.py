"""Node backend: cluster membership — config copies, voting, CRL, leaving.

Layer: node backend. A master candidate keeps a copy of ``config.data``
(pushed by the master after every commit, never older than what it has);
every node answers who it believes the master is, for master-failover
voting; nodes install the CRL the master distributes and forget the cluster
when they are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import msgspec

from corral import pki
from corral.backend.dispatch import handler
from corral.backend.node import NodeBackend
from corral.config import store
from corral.daemons import pidfile
from corral.errors import ConfigError, CorralError, ECode
from corral.rpc import defs
from corral.rpc import types as t


class _Head(msgspec.Struct):
    serial_no: int = 0


class _ClusterHead(msgspec.Struct):
    cluster_name: str
    master_node: str


class _ConfigHead(msgspec.Struct):
    serial_no: int
    cluster: _ClusterHead
    nodes: dict[str, _NodeHead]


class _NodeHead(msgspec.Struct):
    name: str


def local_config_head(b: NodeBackend) -> _ConfigHead | None:
    """Serial, cluster name and master of the node's config copy, if any."""
    try:
        raw = b.paths.config_file.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=_ConfigHead)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@handler(defs.UPLOAD_CONFIG)
async def upload_config(b: NodeBackend, args: t.ConfigUploadArgs) -> t.Empty:
    data = args.data.encode()
    cfg = store.decode(data, "uploaded config")  # refuse garbage before touching disk
    if cfg.serial_no != args.serial:
        raise ConfigError(
            f"uploaded config has serial {cfg.serial_no}, not {args.serial}", ECode.INVAL
        )
    head = local_config_head(b)
    if head is not None and head.cluster.cluster_name != cfg.cluster.cluster_name:
        raise ConfigError(
            f"this node belongs to cluster {head.cluster.cluster_name}, "
            f"not {cfg.cluster.cluster_name}",
            ECode.STATE,
        )
    if head is not None and head.serial_no >= args.serial:
        return t.Empty()  # we already have this or a newer one: never go back
    b.paths.data_dir.mkdir(parents=True, exist_ok=True)
    store.write_atomic(b.paths.config_file, data)
    return t.Empty()


def _cert_expiry(b: NodeBackend) -> float | None:
    try:
        return pki.cert_not_after(b.paths.node_cert.read_text()).timestamp()
    except (OSError, CorralError):
        return None


@handler(defs.MASTER_INFO)
async def master_info(b: NodeBackend, args: t.Empty) -> t.MasterInfo:
    head = local_config_head(b)
    expiry = _cert_expiry(b)
    if head is None:
        return t.MasterInfo(node_name=b.node_name, cert_not_after=expiry)
    master = head.nodes.get(head.cluster.master_node)
    return t.MasterInfo(
        node_name=b.node_name,
        cluster_name=head.cluster.cluster_name,
        config_serial=head.serial_no,
        master_node=master.name if master else None,
        cert_not_after=expiry,
    )


@handler(defs.UPDATE_CRL)
async def update_crl(b: NodeBackend, args: t.CrlArgs) -> t.Empty:
    if "BEGIN X509 CRL" not in args.crl_pem:
        raise ConfigError("not a PEM certificate revocation list", ECode.INVAL)
    store.write_atomic(b.paths.crl, args.crl_pem.encode(), mode=0o644)
    for cb in b.on_crl_update:
        cb()
    return t.Empty()


@handler(defs.NODE_LEAVE)
async def node_leave(b: NodeBackend, args: t.NodeLeaveArgs) -> t.Empty:
    head = local_config_head(b)
    ident = None
    with contextlib.suppress(OSError, ValueError):
        ident = json.loads(b.paths.node_identity.read_text())
    cluster = (head.cluster.cluster_name if head else None) or (ident or {}).get("cluster")
    if cluster is not None and cluster != args.cluster_name:
        raise ConfigError(
            f"this node belongs to cluster {cluster}, not {args.cluster_name}", ECode.STATE
        )
    for p in (
        b.paths.config_file,
        b.paths.node_cert,
        b.paths.node_key,
        b.paths.ca_cert,
        b.paths.ca_key,
        b.paths.crl,
        b.paths.node_identity,
    ):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    for cb in b.on_leave:
        cb()
    return t.Empty()


@handler(defs.MASTER_STOP)
async def master_stop(b: NodeBackend, args: t.Empty) -> t.Empty:
    """Stop this node's master daemon (by its pid file) and wait until it is gone."""
    await asyncio.to_thread(pidfile.stop, b.paths.masterd_pidfile, "corral-masterd")
    return t.Empty()
