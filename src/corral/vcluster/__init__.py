"""The virtual cluster: N nodes on one host, each a network namespace.

:mod:`corral.vcluster.cluster` builds, starts and removes it (the layout is in
its docstring); :mod:`corral.vcluster.model` keeps the model and the state
file; :mod:`corral.vcluster.net` wraps pyroute2 (namespaces, veths, bridges);
:mod:`corral.vcluster.proc` stops only the processes it recorded.
"""

from __future__ import annotations

from corral.vcluster.cluster import (
    DownReport,
    add_guest_ns,
    down,
    down_all,
    init_cluster,
    list_clusters,
    run_in,
    spawn_in,
    start_node_daemon,
    status,
    up,
    virtual_cluster,
)
from corral.vcluster.model import DEFAULT_BASE, NODED_PORT, VCluster, VClusterError, VNode

__all__ = [
    "DEFAULT_BASE",
    "NODED_PORT",
    "DownReport",
    "VCluster",
    "VClusterError",
    "VNode",
    "add_guest_ns",
    "down",
    "down_all",
    "init_cluster",
    "list_clusters",
    "run_in",
    "spawn_in",
    "start_node_daemon",
    "status",
    "up",
    "virtual_cluster",
]
