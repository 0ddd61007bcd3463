"""Master failover with voting, and the start-up check of the master daemon.

Layer: bootstrap (imports config store, rpc). Like Ganeti's manual
failover: run on a master candidate, it asks the other candidates what they
hold; it takes over only if a majority answered and nobody has a newer
configuration, then writes the config naming itself master, pushes it to
every candidate it can reach (the old master included) and starts
``corral-masterd``. A master daemon that starts where the cluster no longer
agrees it is the master refuses to run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from corral.config import store
from corral.errors import ConfigError, DaemonError, ECode, OpPrereqError
from corral.objects import ConfigData
from corral.paths import Paths
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import NodeTarget, RpcClient


def node_identity(paths: Paths) -> dict[str, object]:
    try:
        data = json.loads(paths.node_identity.read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"this node has no identity ({paths.node_identity}); it is not part of a cluster",
            ECode.ENVIRON,
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("node"), str):
        raise ConfigError(f"{paths.node_identity} is invalid", ECode.ENVIRON)
    return data


def my_name(paths: Paths) -> str:
    return str(node_identity(paths)["node"])


@dataclass
class Vote:
    node: str
    info: t.MasterInfo | None
    error: str | None


async def gather_votes(paths: Paths, cfg: ConfigData, me: str) -> list[Vote]:
    """Ask every other online master candidate what config it holds."""
    from corral.rpc.https import HttpsTransport

    targets = [
        NodeTarget(n.name, n.primary_ip)
        for n in cfg.nodes.values()
        if n.master_candidate and not n.offline and n.name != me
    ]
    if not targets:
        return []
    transport = HttpsTransport(paths, cfg.cluster.noded_port)
    try:
        res = await RpcClient(transport).call_multi(targets, defs.MASTER_INFO, t.Empty())
    finally:
        await transport.close()
    return [Vote(n, r.payload, r.fail_msg) for n, r in res.items()]


def candidate_total(cfg: ConfigData) -> int:
    return sum(1 for n in cfg.nodes.values() if n.master_candidate and not n.offline)


def check_majority(cfg: ConfigData, votes: list[Vote]) -> None:
    total = candidate_total(cfg)
    answered = 1 + sum(1 for v in votes if v.info is not None)
    if answered * 2 <= total:
        down = ", ".join(sorted(v.node for v in votes if v.info is None)) or "-"
        raise OpPrereqError(
            f"only {answered} of {total} master candidates answered (no answer from {down}); "
            "a majority is needed. Use --no-voting only if you are sure the other "
            "candidates are down",
            ECode.STATE,
        )


async def master_failover(paths: Paths, no_voting: bool = False) -> str:
    """Make this node the master. Returns the old master's name."""
    cfg = store.load(paths.config_file)
    me = my_name(paths)
    mine = next((n for n in cfg.nodes.values() if n.name == me), None)
    if mine is None:
        raise OpPrereqError(f"this node ({me}) is not in the cluster configuration", ECode.STATE)
    if mine.uuid == cfg.cluster.master_node:
        raise OpPrereqError(f"this node ({me}) is already the master", ECode.STATE)
    if not mine.master_candidate:
        raise OpPrereqError(f"this node ({me}) is not a master candidate", ECode.STATE)
    if not paths.ca_key.exists():
        raise ConfigError(f"this node has no copy of the cluster CA key ({paths.ca_key})")
    old = cfg.nodes.get(cfg.cluster.master_node)
    old_name = old.name if old else "?"
    votes = await gather_votes(paths, cfg, me)
    if not no_voting:
        check_majority(cfg, votes)
    for v in votes:
        if v.info is not None and (v.info.config_serial or 0) > cfg.serial_no:
            raise OpPrereqError(
                f"node {v.node} has a newer configuration (serial {v.info.config_serial}, "
                f"this node has {cfg.serial_no}); wait for replication or fail over there",
                ECode.STATE,
            )
    if old is not None and any(v.node == old.name and v.info is not None for v in votes):
        # The old master is alive: make sure its master daemon stops before
        # this node takes over, or the cluster would have two masters.
        await stop_old_master(paths, cfg, old.name, old.primary_ip)
    cfg.cluster.master_node = mine.uuid
    cfg.cluster.serial_no += 1
    cfg.cluster.mtime = time.time()
    cfg.serial_no += 1
    cfg.mtime = time.time()
    blob = store.encode(cfg)
    store.write_atomic(paths.config_file, blob)
    await push_config(paths, cfg, me, blob)
    return old_name


async def stop_old_master(paths: Paths, cfg: ConfigData, name: str, address: str) -> None:
    from corral.rpc.https import HttpsTransport

    transport = HttpsTransport(paths, cfg.cluster.noded_port)
    try:
        res = await RpcClient(transport).call(
            NodeTarget(name, address), defs.MASTER_STOP, t.Empty()
        )
    finally:
        await transport.close()
    if res.failed:
        raise OpPrereqError(
            f"the old master {name} is reachable but its master daemon could "
            f"not be stopped: {res.fail_msg}; not taking over",
            ECode.STATE,
        )


async def push_config(paths: Paths, cfg: ConfigData, me: str, blob: bytes) -> None:
    """Best effort: give every reachable candidate (the old master too) the new config."""
    from corral.rpc.https import HttpsTransport

    targets = [
        NodeTarget(n.name, n.primary_ip)
        for n in cfg.nodes.values()
        if n.master_candidate and not n.offline and n.name != me
    ]
    if not targets:
        return
    transport = HttpsTransport(paths, cfg.cluster.noded_port)
    try:
        await RpcClient(transport).call_multi(
            targets,
            defs.UPLOAD_CONFIG,
            t.ConfigUploadArgs(serial=cfg.serial_no, data=blob.decode()),
        )
    finally:
        await transport.close()


async def check_master_role(paths: Paths, cfg: ConfigData, no_voting: bool = False) -> None:
    """Refuse to run a master daemon where the cluster disagrees it is the master."""
    me = my_name(paths)
    master = cfg.nodes.get(cfg.cluster.master_node)
    if master is None or master.name != me:
        raise DaemonError(
            f"this node ({me}) is not the master; the configuration names "
            f"{master.name if master else '?'}",
            ECode.STATE,
        )
    if candidate_total(cfg) <= 1:
        return
    votes = await gather_votes(paths, cfg, me)
    for v in votes:
        if (
            v.info is not None
            and v.info.master_node not in (None, me)
            and (v.info.config_serial or 0) > cfg.serial_no
        ):
            raise DaemonError(
                f"node {v.node} reports {v.info.master_node} as master with a newer "
                f"configuration (serial {v.info.config_serial} > {cfg.serial_no}): this "
                "node is no longer the master",
                ECode.STATE,
            )
    if not no_voting:
        try:
            check_majority(cfg, votes)
        except OpPrereqError as err:
            raise DaemonError(
                f"cannot confirm this node is the master: {err}", ECode.STATE
            ) from None
