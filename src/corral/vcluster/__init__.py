"""The virtual cluster: N nodes on one host, each a network namespace.

:mod:`corral.vcluster.cluster` builds and starts it (the layout is in its
docstring), :mod:`corral.vcluster.teardown` stops, removes and inspects it;
:mod:`corral.vcluster.model` keeps the model and the state file;
:mod:`corral.vcluster.net` wraps pyroute2 (namespaces, veths, bridges);
:mod:`corral.vcluster.proc` stops only the processes it recorded.
"""

from __future__ import annotations

from corral.vcluster.cluster import (
    add_guest_ns,
    init_cluster,
    run_in,
    spawn_in,
    start_node_daemon,
    up,
    virtual_cluster,
)
from corral.vcluster.model import DEFAULT_BASE, NODED_PORT, VCluster, VClusterError, VNode
from corral.vcluster.teardown import DownReport, down, down_all, list_clusters, status

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
