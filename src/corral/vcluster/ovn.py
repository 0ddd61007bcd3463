"""OVN in the virtual cluster: central databases on node 1, every node a chassis.

Layer: testing support (imports this package's ``cluster``/``net``/``model``,
``paths``, ``ovsdbapp``). What :func:`enable` adds to the layout of
:mod:`corral.vcluster.cluster`, for prefix ``P``::

    namespace Psw    bridge tun (no IP)    | ports Pt1..PtN
    namespace Pn<i>  tun0 -> OVS bridge br-phy (netdev) 203.0.113.(200+i)/24
                     OVS bridge br-int (netdev, fail_mode secure)
                     ovsdb-server, ovs-vswitchd, ovn-controller (chassis "node<i>")
    namespace Pn1    also: NB ovsdb-server :6641, SB ovsdb-server :6642, ovn-northd

There is no openvswitch kernel module here, so every bridge uses the userspace
datapath (``datapath_type=netdev``) and the geneve tunnels between chassis run
inside ``ovs-vswitchd``, which learns the route to the other tunnel IPs from the
kernel of its namespace: hence the tunnel IP sits on ``br-phy``, the OVS bridge
holding the underlay veth ``tun0``. Every daemon runs in the foreground,
started with :func:`~corral.vcluster.cluster.spawn_in` (so ``down`` stops it by
PID); its files (databases, pid files, control sockets, logs) live under the
node's root at the cluster-wide paths a real node uses (``/run/openvswitch``,
``/var/lib/ovn``, ...). The host process reaches every database through its
unix socket (a file, visible from any namespace); chassis reach the SB over TCP
on node 1's management address, as real nodes would.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovs.db import idl as ovs_idl  # type: ignore[import-untyped]
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_conn  # type: ignore[import-untyped]
from ovsdbapp.schema.open_vswitch import impl_idl as ovs_impl  # type: ignore[import-untyped]

from corral.network.ovs import OVS_DB_SOCK  # where a node's kvm-ifup looks too
from corral.vcluster import net
from corral.vcluster.cluster import _new_ns, _veth, spawn_in
from corral.vcluster.model import VCluster, VClusterError, VNode, _mac
from corral.vcluster.ovsdb_rpc import Rpc, transact, unix_path, wait_rows

NB_PORT = 6641
SB_PORT = 6642
TUN_BRIDGE = "tun"  # the underlay switch, in the switch namespace
TUN_IFNAME = "tun0"  # the node's end of its underlay veth
INT_BRIDGE = "br-int"
PHY_BRIDGE = "br-phy"
ENCAP_TYPE = "geneve"
TUNNEL_NET = "203.0.113"
TUNNEL_HOST_BASE = 200  # node i's tunnel IP is 203.0.113.(200+i)
TUNNEL_PREFIXLEN = 24
# Geneve adds ~58 bytes (outer Ethernet/IPv4/UDP, Geneve header, OVN's option):
# a larger underlay MTU keeps the overlay at 1500, as on a real jumbo-frame
# underlay (with 1500 the workloads would need an MTU of 1442 or TCP stalls).
UNDERLAY_MTU = 1600
MAX_OVN_NODES = 254 - TUNNEL_HOST_BASE
PORT_NS_TAG = "o"  # workload namespaces: P o<k>

VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema"
SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema"
NB_DB_NAME = "OVN_Northbound"
SB_DB_NAME = "OVN_Southbound"

# Cluster-wide paths, as on a real node (under the node root in a vcluster).
OVS_RUN_DIR = os.path.dirname(OVS_DB_SOCK)
OVS_DB_DIR = "/var/lib/openvswitch"
OVS_LOG_DIR = "/var/log/openvswitch"
OVN_RUN_DIR = "/run/ovn"
OVN_DB_DIR = "/var/lib/ovn"
OVN_LOG_DIR = "/var/log/ovn"

# Daemons log to their --log-file; their stderr (kept by spawn_in) only gets
# errors, which is what a failed start-up reports.
CONSOLE_LOG = "-vconsole:err"
TIMEOUT = 30.0  # for each daemon to answer; start-up takes well under a second


# --- records --------------------------------------------------------------------------


@dataclass(frozen=True)
class OvnCentral:
    """The NB and SB databases and ``ovn-northd`` (on node 1 of a vcluster).

    ``nb_remote``/``sb_remote`` are what nodes and ``gnt-cluster`` use
    (``tcp:<node1 mgmt IP>:6641``), reachable from the cluster's namespaces;
    ``nb_unix``/``sb_unix`` are the same databases for a process in the
    host namespace (tests, the CLI).
    """

    node: str
    nb_remote: str
    sb_remote: str
    nb_unix: str
    sb_unix: str
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class OvnChassis:
    """One node as an OVN chassis."""

    node: str  # = the chassis name (external_ids:system-id)
    encap_ip: str
    db_sock: str  # the node's Open_vSwitch database, ``unix:`` remote
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Dirs:
    """One node's OVS/OVN directories, on the host."""

    ovs_run: Path
    ovs_db: Path
    ovs_log: Path
    ovn_run: Path
    ovn_db: Path
    ovn_log: Path

    @classmethod
    def of(cls, node: VNode) -> _Dirs:
        hp = node.paths.host_path
        return cls(
            ovs_run=hp(OVS_RUN_DIR),
            ovs_db=hp(OVS_DB_DIR),
            ovs_log=hp(OVS_LOG_DIR),
            ovn_run=hp(OVN_RUN_DIR),
            ovn_db=hp(OVN_DB_DIR),
            ovn_log=hp(OVN_LOG_DIR),
        )

    def make(self) -> None:
        for d in (self.ovs_run, self.ovs_db, self.ovs_log, self.ovn_run, self.ovn_db, self.ovn_log):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        """Where OVS/OVN tools put what they are not told about (ctl sockets, ...)."""
        return {
            "OVS_RUNDIR": str(self.ovs_run),
            "OVS_DBDIR": str(self.ovs_db),
            "OVS_LOGDIR": str(self.ovs_log),
            "OVN_RUNDIR": str(self.ovn_run),
            "OVN_DBDIR": str(self.ovn_db),
            "OVN_LOGDIR": str(self.ovn_log),
        }


def tunnel_ip(node: VNode) -> str:
    return f"{TUNNEL_NET}.{TUNNEL_HOST_BASE + node.index}"


def sb_chassis(central: OvnCentral, timeout: float = 10.0) -> list[str]:
    """Names of the chassis registered in the SB."""
    op = {"op": "select", "table": "Chassis", "where": [], "columns": ["name"]}
    (res,) = transact(unix_path(central.sb_unix), SB_DB_NAME, [op], timeout=timeout)
    return sorted(str(r["name"]) for r in res.get("rows", []))


# --- the node's Open_vSwitch database through ovsdbapp -------------------------------


class _NodeOvsIdl(ovs_impl.OvsdbIdl):  # type: ignore[misc]
    """ovsdbapp's Open_vSwitch API for one node.

    ovsdbapp keeps a backend's connection on the *class* (the first one made
    wins for every later instance), so each node's connection is kept on the
    instance here instead.
    """

    @property
    def ovsdb_connection(self) -> Any:
        return self._node_conn

    @ovsdb_connection.setter
    def ovsdb_connection(self, conn: Any) -> None:
        self._node_conn = conn


@contextlib.contextmanager
def node_ovsdb(node: VNode, timeout: float = TIMEOUT) -> Iterator[Any]:
    """ovsdbapp's Open_vSwitch API on ``node``'s database (closed afterwards).

    Its transactions, like ``ovs-vsctl``'s, return once ``ovs-vswitchd`` has
    applied them (``cur_cfg`` caught up with ``next_cfg``).
    """
    remote = f"unix:{node.paths.host_path(OVS_DB_SOCK)}"
    helper = ovs_idl.SchemaHelper(location=VSWITCH_SCHEMA)
    for table in ("Open_vSwitch", "Bridge", "Port", "Interface"):
        helper.register_table(table)
    conn = ovsdbapp_conn.Connection(ovsdbapp_conn.OvsdbIdl(remote, helper), timeout=timeout)
    api = _NodeOvsIdl(conn)
    try:
        yield api
    finally:
        conn.stop(timeout=5)


# --- daemons ----------------------------------------------------------------------------


def _wait_unix(path: Path, alive: Callable[[], bool], timeout: float, what: str) -> None:
    """Until an OVSDB server answers on ``path`` (a ``list_dbs`` round trip)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            rpc = Rpc(str(path), timeout=2.0)
            try:
                rpc.call("list_dbs", [])
                return
            finally:
                rpc.close()
        except (OSError, VClusterError) as err:
            last = err
        if not alive():
            break
        time.sleep(0.01)
    raise VClusterError(f"{what} did not answer on {path}: {last}")


def _start(
    vc: VCluster, node: VNode, argv: list[str], role: str, log: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    # Foreground daemons (no --detach): the PID spawn_in records is the daemon's.
    return spawn_in(node, argv, role=role, log=log, env=env, vc=vc)


def _fail(proc: subprocess.Popen[bytes], log: Path, what: str, err: Exception) -> VClusterError:
    proc.poll()
    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
    return VClusterError(f"{what} did not come up (exit status {proc.returncode}): {err}\n{tail}")


def _ovsdb_server(
    vc: VCluster,
    node: VNode,
    *,
    db_file: Path,
    schema: str,
    sock: Path,
    ctl: Path,
    pidfile: Path,
    log_file: Path,
    role: str,
    tcp_port: int | None,
    env: Mapping[str, str],
) -> int:
    """Create ``db_file`` from ``schema`` (if new) and serve it; return the PID once it answers."""
    if not db_file.exists():
        created = subprocess.run(
            ["ovsdb-tool", "create", str(db_file), schema], capture_output=True, text=True
        )
        if created.returncode != 0:
            raise VClusterError(f"ovsdb-tool create {db_file}: {created.stderr.strip()}")
    argv = [
        "ovsdb-server",
        str(db_file),
        f"--remote=punix:{sock}",
        f"--unixctl={ctl}",
        f"--pidfile={pidfile}",
        f"--log-file={log_file}",
        "--no-chdir",
        CONSOLE_LOG,
    ]
    if tcp_port is not None:
        argv.append(f"--remote=ptcp:{tcp_port}:{node.mgmt_ip}")
    stderr_log = log_file.with_suffix(".stderr")
    proc = _start(vc, node, argv, role, stderr_log, env)
    alive = lambda: proc.poll() is None  # noqa: E731
    try:
        _wait_unix(sock, alive, TIMEOUT, role)
        if tcp_port is not None and not net.wait_tcp(
            node.ns, node.mgmt_ip, tcp_port, TIMEOUT, alive=alive
        ):
            raise VClusterError(f"nothing listens on {node.mgmt_ip}:{tcp_port}")
    except VClusterError as err:
        raise _fail(proc, stderr_log, f"{role} on {node.name}", err) from err
    return proc.pid


def central(vc: VCluster) -> OvnCentral:
    """The :class:`OvnCentral` of a vcluster whose OVN is up (e.g. after ``up(ovn=True)``)."""
    if not vc.ovn:
        raise VClusterError(f"virtual cluster {vc.prefix} runs no OVN")
    node = vc.master
    d = _Dirs.of(node)
    roles = {"ovn-nb", "ovn-sb", "ovn-northd"}
    return OvnCentral(
        node=node.name,
        nb_remote=f"tcp:{node.mgmt_ip}:{NB_PORT}",
        sb_remote=f"tcp:{node.mgmt_ip}:{SB_PORT}",
        nb_unix=f"unix:{d.ovn_run / 'ovnnb_db.sock'}",
        sb_unix=f"unix:{d.ovn_run / 'ovnsb_db.sock'}",
        pids=tuple(p.pid for p in vc.processes if p.role in roles and p.ns == node.ns),
    )


def start_central(vc: VCluster) -> OvnCentral:
    """NB and SB ovsdb-servers and ``ovn-northd`` in node 1's namespace.

    The databases listen on node 1's management IP (6641/6642) and on unix
    sockets under its root; returns once northd has initialised the SB.
    """
    node = vc.master
    d = _Dirs.of(node)
    d.make()
    env = d.env
    for name, schema, port in (("nb", NB_SCHEMA, NB_PORT), ("sb", SB_SCHEMA, SB_PORT)):
        _ovsdb_server(
            vc,
            node,
            db_file=d.ovn_db / f"ovn{name}_db.db",
            schema=schema,
            sock=d.ovn_run / f"ovn{name}_db.sock",
            ctl=d.ovn_run / f"ovn{name}_db.ctl",
            pidfile=d.ovn_run / f"ovn{name}_db.pid",
            log_file=d.ovn_log / f"ovsdb-server-{name}.log",
            role=f"ovn-{name}",
            tcp_port=port,
            env=env,
        )
    nb_sock = d.ovn_run / "ovnnb_db.sock"
    sb_sock = d.ovn_run / "ovnsb_db.sock"
    log = d.ovn_log / "ovn-northd.stderr"
    northd = _start(
        vc,
        node,
        [
            "ovn-northd",
            f"--ovnnb-db=unix:{nb_sock}",
            f"--ovnsb-db=unix:{sb_sock}",
            f"--unixctl={d.ovn_run / 'ovn-northd.ctl'}",
            f"--pidfile={d.ovn_run / 'ovn-northd.pid'}",
            f"--log-file={d.ovn_log / 'ovn-northd.log'}",
            "--no-chdir",
            CONSOLE_LOG,
        ],
        "ovn-northd",
        log,
        env,
    )
    # northd writes SB_Global once it holds the SB lock and has done its first
    # pass: from then on logical switches turn into datapaths.
    try:
        wait_rows(str(sb_sock), SB_DB_NAME, "SB_Global", [], TIMEOUT)
    except VClusterError as err:
        raise _fail(northd, log, f"ovn-northd on {node.name}", err) from err
    return central(vc)


def _vswitch_root_row(node: VNode, sb_remote: str) -> dict[str, Any]:
    """The ``Open_vSwitch`` row a chassis starts from (pure; what ``ovs-ctl`` and
    the admin's ``ovs-vsctl set open .`` would write on a real node)."""
    ids = {
        "system-id": node.name,
        "hostname": node.name,
        "ovn-remote": sb_remote,
        "ovn-encap-type": ENCAP_TYPE,
        "ovn-encap-ip": tunnel_ip(node),
        "ovn-bridge": INT_BRIDGE,
        "ovn-bridge-datapath-type": "netdev",
    }
    return {"external_ids": ["map", [[k, v] for k, v in ids.items()]]}


def start_chassis(
    vc: VCluster, node: VNode, central: OvnCentral, *, wait: bool = True
) -> OvnChassis:
    """Make ``node`` an OVN chassis named after it (userspace datapath, geneve).

    ovsdb-server (``/var/lib/openvswitch/conf.db`` on ``/run/openvswitch/db.sock``)
    and ovs-vswitchd; the ``Open_vSwitch`` external_ids OVN reads; ``br-int``
    and ``br-phy`` (holding ``tun0``, with the tunnel IP); then ovn-controller.
    With ``wait``, returns once the chassis is registered in the SB.
    """
    if not net.ns_exists(node.ns) or TUN_IFNAME not in net.links(node.ns):
        raise VClusterError(f"{node.name} has no underlay link {TUN_IFNAME} (build_underlay first)")
    d = _Dirs.of(node)
    d.make()
    env = d.env
    sock = node.paths.host_path(OVS_DB_SOCK)
    db_file = d.ovs_db / "conf.db"
    if not db_file.exists():
        # The identity goes in before any daemon reads it (no window in which
        # ovn-controller could register under another name).
        for argv in (
            ["ovsdb-tool", "create", str(db_file), VSWITCH_SCHEMA],
            [
                "ovsdb-tool",
                "transact",
                str(db_file),
                json.dumps(
                    [
                        "Open_vSwitch",
                        {
                            "op": "insert",
                            "table": "Open_vSwitch",
                            "row": _vswitch_root_row(node, central.sb_remote),
                        },
                    ]
                ),
            ],
        ):
            res = subprocess.run(argv, capture_output=True, text=True)
            if res.returncode != 0:
                raise VClusterError(f"{' '.join(argv[:2])} {db_file}: {res.stderr.strip()}")
    pids = [
        _ovsdb_server(
            vc,
            node,
            db_file=db_file,
            schema=VSWITCH_SCHEMA,
            sock=sock,
            ctl=d.ovs_run / "ovsdb-server.ctl",
            pidfile=d.ovs_run / "ovsdb-server.pid",
            log_file=d.ovs_log / "ovsdb-server.log",
            role="ovsdb-server",
            tcp_port=None,
            env=env,
        )
    ]
    vlog = d.ovs_log / "ovs-vswitchd.stderr"
    vswitchd = _start(
        vc,
        node,
        [
            "ovs-vswitchd",
            f"unix:{sock}",
            f"--unixctl={d.ovs_run / 'ovs-vswitchd.ctl'}",
            f"--pidfile={d.ovs_run / 'ovs-vswitchd.pid'}",
            f"--log-file={d.ovs_log / 'ovs-vswitchd.log'}",
            "--no-chdir",
            CONSOLE_LOG,
        ],
        "ovs-vswitchd",
        vlog,
        env,
    )
    pids.append(vswitchd.pid)
    try:
        with node_ovsdb(node) as api:
            # br-int netdev up front: ovn-controller would otherwise create it
            # with the (missing) kernel datapath first.
            with api.transaction(check_error=True) as txn:
                txn.add(api.add_br(INT_BRIDGE, datapath_type="netdev"))
                txn.add(api.add_br(PHY_BRIDGE, datapath_type="netdev"))
            with api.transaction(check_error=True) as txn:
                txn.add(api.set_fail_mode(INT_BRIDGE, "secure"))
                txn.add(api.add_port(PHY_BRIDGE, TUN_IFNAME))
    except Exception as err:
        raise _fail(vswitchd, vlog, f"ovs-vswitchd on {node.name}", err) from err
    # The tunnel IP on br-phy (vswitchd's tap): the userspace datapath routes
    # geneve by the kernel's table, out of the bridge that holds tun0.
    net.add_address(node.ns, PHY_BRIDGE, tunnel_ip(node), TUNNEL_PREFIXLEN)
    net.link_up(node.ns, PHY_BRIDGE)
    net.link_up(node.ns, INT_BRIDGE)
    clog = d.ovn_log / "ovn-controller.stderr"
    controller = _start(
        vc,
        node,
        [
            "ovn-controller",
            f"unix:{sock}",  # its control socket: $OVN_RUNDIR/ovn-controller.<pid>.ctl
            f"--pidfile={d.ovn_run / 'ovn-controller.pid'}",
            f"--log-file={d.ovn_log / 'ovn-controller.log'}",
            "--no-chdir",
            CONSOLE_LOG,
        ],
        "ovn-controller",
        clog,
        env,
    )
    pids.append(controller.pid)
    chassis = OvnChassis(
        node=node.name, encap_ip=tunnel_ip(node), db_sock=f"unix:{sock}", pids=tuple(pids)
    )
    if wait:
        wait_chassis(central, node)
    return chassis


def wait_chassis(central: OvnCentral, node: VNode, timeout: float = TIMEOUT) -> None:
    """Until ``node`` is registered in the SB as a chassis (named after it)."""
    where = [["name", "==", node.name]]
    try:
        wait_rows(unix_path(central.sb_unix), SB_DB_NAME, "Chassis", where, timeout)
    except VClusterError as err:
        log = _Dirs.of(node).ovn_log / "ovn-controller.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        raise VClusterError(
            f"ovn-controller on {node.name} did not register: {err}\n{tail}"
        ) from err


# --- the underlay and enabling it all --------------------------------------------------


def build_underlay(vc: VCluster) -> None:
    """Bridge ``tun`` in the switch namespace and a veth ``tun0`` into every node."""
    if len(vc.nodes) > MAX_OVN_NODES:
        raise VClusterError(f"OVN in a virtual cluster takes at most {MAX_OVN_NODES} nodes")
    sw = vc.switch_ns
    net.add_bridge(sw, TUN_BRIDGE, mac=_mac(vc.prefix, 0xF2, 0))
    vc.links.append({"ns": sw, "name": TUN_BRIDGE, "kind": "bridge"})
    vc.save()
    for node in vc.nodes:
        sw_end = f"{vc.prefix}t{node.index}"
        _veth(vc, sw_end, node.ns, TUN_IFNAME, TUN_BRIDGE)
        _set_mtu(sw, sw_end, UNDERLAY_MTU)  # the bridge follows its ports
        _set_mtu(node.ns, TUN_IFNAME, UNDERLAY_MTU)
        net.link_up(node.ns, TUN_IFNAME)
        vc.save()


def _set_mtu(ns: str, ifname: str, mtu: int) -> None:
    with net.ipr(ns) as r:
        found = r.link_lookup(ifname=ifname)
        if not found:
            raise VClusterError(f"no link {ifname} in {ns}")
        r.link("set", index=found[0], mtu=mtu)


def enable(vc: VCluster) -> OvnCentral:
    """Underlay, central databases and northd on node 1, a chassis on every node.

    Returns once every node is registered in the SB (controllers register in
    parallel: each node is started, then all are waited for).
    """
    vc.ovn = True
    vc.save()
    build_underlay(vc)
    c = start_central(vc)
    for node in vc.nodes:
        start_chassis(vc, node, c, wait=False)
    for node in vc.nodes:
        wait_chassis(c, node)
    warm_underlay(vc)
    return c


def warm_underlay(vc: VCluster) -> None:
    """Have every node resolve every other node's tunnel IP once.

    The userspace datapath learns a tunnel endpoint's MAC only from ARP
    replies it sees on ``br-phy``; until then it drops the tunnelled packet
    and sends its own ARP request. A ping from each node's kernel (out of
    ``br-phy``) to each peer fills that cache up front, so the first overlay
    packet gets through. (Entries age out after ``tnl/neigh/aging``, 15 min
    by default; the next first packet is then dropped again.) Best effort.
    """
    procs = [
        net.popen_in(
            node.ns,
            ["ping", "-n", "-q", "-c", "1", "-W", "1", tunnel_ip(peer)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for node in vc.nodes
        for peer in vc.nodes
        if peer is not node
    ]
    for proc in procs:
        proc.wait()


# --- workloads on the overlay (tests) --------------------------------------------------


def add_port_ns(vc: VCluster, node: VNode, lsp_name: str, mac: str, ip_cidr: str) -> str:
    """A namespace standing in for a VM NIC on logical port ``lsp_name``, on ``node``.

    An OVS internal port on the node's ``br-int`` with
    ``external_ids:iface-id=<lsp_name>`` (ovn-controller binds the logical
    port to this chassis when it sees it) is moved into a new namespace
    ``P o<k>`` and given ``mac`` and ``ip_cidr`` (e.g. ``203.0.113.11/24``).
    Returns the namespace; :func:`~corral.vcluster.teardown.down` removes it.
    """
    k = 1 + sum(1 for ns in vc.namespaces if ns.startswith(f"{vc.prefix}{PORT_NS_TAG}"))
    ns = f"{vc.prefix}{PORT_NS_TAG}{k}"
    port = net.check_ifname(ns)  # unique across nodes, and tells where it belongs
    address, _, plen = ip_cidr.partition("/")
    with node_ovsdb(node) as api:
        ids = {"iface-id": lsp_name, "attached-mac": mac, "iface-status": "active"}
        api.add_port(INT_BRIDGE, port, type="internal", external_ids=ids).execute(check_error=True)
    _new_ns(vc, ns)
    with net.ipr(node.ns) as r:
        r.link("set", index=r.link_lookup(ifname=port)[0], net_ns_fd=ns)
    net.link_up(ns, port, mac=mac)
    net.add_address(ns, port, address, int(plen or 24))
    vc.save()
    return ns
