"""The virtual cluster: N nodes on one host, for tests and the demo.

Layer: testing support (imports ``paths`` and this package's ``net``/``proc``).

Layout, for prefix ``P`` (e.g. ``cv3f2a-``)::

    namespace Psw   bridges  mgmt (no IP)        vmnet (no IP)
                             |  ports Pm1..PmN   |  ports Pv1..PvN
    namespace Pn<i> mgmt0 198.51.100.(10+i)/24   vmnet0 -> bridge br0 (no IP)

Each node has a root directory ``<base>/Pn<i>/`` (its ``CORRAL_ROOT``) and its
own ``corral-noded`` on ``<mgmt IP>:1811``. ``br0`` is the ``link`` bridged
NICs use; 203.0.113.0/24 is left to instances. ``<base>/Pshared-storage`` is
the shared storage: every node's shared file storage directory is a symlink to
it (:func:`link_shared_dir`). Nothing is created in the host namespace.
``<base>/vcluster.json`` (written atomically, updated after every step)
records what was made; :func:`down` removes it, and after a crash also
every namespace named with the prefix and every recorded process that still
is the one we started.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from corral.paths import Paths
from corral.vcluster import net
from corral.vcluster.model import (
    BIN,
    DEFAULT_BASE,
    MAX_NODES,
    MGMT_NET,
    MGMT_PREFIXLEN,
    NODE_BRIDGE,
    NODED_PORT,
    SHARED_FILE_STORAGE_DIR,
    STATE_FILE,
    SWITCH_BRIDGES,
    VCluster,
    VClusterError,
    VNode,
    _atomic_write,
    _mac,
    new_prefix,
    normalize_prefix,
)
from corral.vcluster.proc import ProcRecord, starttime, stop
from corral.vcluster.teardown import (
    _node_procs_file,
    _read_node_procs,
    down,
)

# --- up -----------------------------------------------------------------------------


def up(
    n: int, prefix: str | None = None, base: str | Path | None = None, *, ovn: bool = False
) -> VCluster:
    """Build the namespaces, switch, links and node roots (no Corral daemons yet).

    With ``ovn``, also the geneve underlay, OVN's central databases on node 1
    and a chassis on every node (:func:`corral.vcluster.ovn.enable`).
    On any failure everything made so far is removed before the error propagates.
    """
    if not 1 <= n <= MAX_NODES:
        raise VClusterError(f"number of nodes must be 1..{MAX_NODES}")
    p = normalize_prefix(prefix) if prefix else new_prefix()
    b = Path(base).absolute() if base else DEFAULT_BASE / p
    if (b / STATE_FILE).exists():
        raise VClusterError(f"{b} already holds a virtual cluster (run down first)")
    clash = net.list_ns(p)
    if clash:
        raise VClusterError(f"namespaces with prefix {p} exist already: {', '.join(clash)}")
    b.mkdir(parents=True, exist_ok=True)
    vc = VCluster(prefix=p, base=b)
    vc.save()  # before creating anything, so a crash leaves a trace
    try:
        _build(vc, n)
        if ovn:
            from corral.vcluster import ovn as vovn  # imports this module

            vovn.enable(vc)
    except BaseException:
        with contextlib.suppress(Exception):
            down(vc)
        raise
    vc.complete = True
    vc.save()
    return vc


def _new_ns(vc: VCluster, ns: str) -> None:
    vc.namespaces.append(ns)
    vc.save()
    net.create_ns(ns)


def _veth(vc: VCluster, sw_name: str, node_ns: str, node_name: str, bridge: str) -> None:
    net.add_veth(vc.switch_ns, sw_name, node_ns, node_name)
    vc.links.append({"ns": vc.switch_ns, "name": sw_name, "kind": "veth", "peer": node_name})
    net.enslave(vc.switch_ns, sw_name, bridge)
    net.link_up(vc.switch_ns, sw_name)


def _build(vc: VCluster, n: int) -> None:
    sw = vc.switch_ns
    _new_ns(vc, sw)
    for role, bridge in enumerate(SWITCH_BRIDGES, start=0xF0):
        net.add_bridge(sw, bridge, mac=_mac(vc.prefix, role, 0))
        vc.links.append({"ns": sw, "name": bridge, "kind": "bridge"})
    vc.dirs.append(str(vc.shared_dir))
    vc.save()
    vc.shared_dir.mkdir()
    for i in range(1, n + 1):
        ns = f"{vc.prefix}n{i}"
        root = vc.base / ns
        node = VNode(
            index=i, name=f"node{i}", ns=ns, mgmt_ip=f"{MGMT_NET}.{10 + i}", root=str(root)
        )
        vc.dirs.append(str(root))
        vc.nodes.append(node)
        _new_ns(vc, ns)
        root.mkdir(parents=True, exist_ok=True)
        Paths(root).ensure()
        _link_shared(vc, node, SHARED_FILE_STORAGE_DIR)
        # management: Pm<i> in the switch's mgmt bridge <-> mgmt0 with the node's IP
        _veth(vc, f"{vc.prefix}m{i}", ns, "mgmt0", "mgmt")
        net.add_address(ns, "mgmt0", node.mgmt_ip, MGMT_PREFIXLEN)
        net.link_up(ns, "mgmt0")
        # VM network: Pv<i> in the switch's vmnet bridge <-> vmnet0, a port of br0
        _veth(vc, f"{vc.prefix}v{i}", ns, "vmnet0", "vmnet")
        net.add_bridge(ns, NODE_BRIDGE, mac=_mac(vc.prefix, 0, i))
        vc.links.append({"ns": ns, "name": NODE_BRIDGE, "kind": "bridge"})
        net.enslave(ns, "vmnet0", NODE_BRIDGE)
        net.link_up(ns, "vmnet0")
        vc.save()


def _link_shared(vc: VCluster, node: VNode, cluster_path: str) -> None:
    link = node.paths.host_path(cluster_path)
    if link.is_symlink() and Path(os.readlink(link)) == vc.shared_dir:
        return
    if link.is_symlink() or link.exists():
        raise VClusterError(f"{link} exists already; cannot make it the shared storage")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(vc.shared_dir, target_is_directory=True)


def link_shared_dir(vc: VCluster, cluster_path: str = SHARED_FILE_STORAGE_DIR) -> None:
    """Make ``cluster_path`` one directory for all nodes: :attr:`VCluster.shared_dir`.

    Each node's ``<root><cluster_path>`` becomes a symlink to it, as a shared
    filesystem mounted at the same place on every node would be, so a
    ``sharedfile`` disk created through one node is there on all (what
    migration and failover need). :func:`up` links the default path before
    ``gnt-cluster init``, whose ``makedirs(exist_ok=True)`` follows the link;
    for another ``--shared-file-storage-dir``, call this before :func:`init_cluster`.
    """
    if not cluster_path.startswith("/"):
        raise VClusterError(f"the shared storage path must be absolute, not {cluster_path!r}")
    for node in vc.nodes:
        _link_shared(vc, node, cluster_path)


def add_guest_ns(vc: VCluster, node: VNode, index: int, address: str, prefixlen: int = 24) -> str:
    """A namespace standing in for a VM on ``node``'s ``br0`` (address in 203.0.113.0/24).

    Returns the namespace (``P g<index>``), whose ``eth0`` has ``address``;
    the node side is ``g<index>`` enslaved to ``br0``. :func:`down` removes it.
    """
    ns = f"{vc.prefix}g{index}"
    _new_ns(vc, ns)
    port = f"g{index}"
    net.add_veth(node.ns, port, ns, "eth0")
    vc.links.append({"ns": node.ns, "name": port, "kind": "veth", "peer": "eth0"})
    net.enslave(node.ns, port, NODE_BRIDGE)
    net.link_up(node.ns, port)
    net.add_address(ns, "eth0", address, prefixlen)
    net.link_up(ns, "eth0")
    vc.save()
    return ns


# --- processes inside nodes -----------------------------------------------------------


def _resolve(prog: str) -> str:
    """``gnt-node`` → ``<venv>/bin/gnt-node`` when the venv has it."""
    if os.sep not in prog and (BIN / prog).exists():
        return str(BIN / prog)
    return prog


def run_in(
    node: VNode,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    check: bool = False,
    input: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``node``'s namespace and wait for it.

    The environment is the host's plus ``CORRAL_ROOT=<node root>`` plus ``env``.
    A bare program name found in the virtualenv's ``bin`` runs from there.
    """
    args = [_resolve(argv[0]), *argv[1:]]
    proc = net.run_in_ns(
        node.ns,
        args,
        env={**node.env, **(env or {})},
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise VClusterError(
            f"{' '.join(args)} in {node.ns} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _record(node: VNode, rec: ProcRecord, vc: VCluster | None) -> None:
    root = Path(node.root)
    recs = [r for r in _read_node_procs(root) if r.pid != rec.pid] + [rec]
    _atomic_write(_node_procs_file(root), json.dumps([r.to_dict() for r in recs]) + "\n")
    if vc is not None:
        vc.processes = [r for r in vc.processes if r.pid != rec.pid] + [rec]
        vc.save()


def spawn_in(
    node: VNode,
    argv: Sequence[str],
    *,
    role: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    vc: VCluster | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running, detached process inside ``node``'s namespace.

    Its PID, argv and start time are recorded (in the node root, and in the
    state file when ``vc`` is given) so :func:`down` can stop exactly it.
    """
    args = [_resolve(argv[0]), *argv[1:]]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = net.popen_in(
            node.ns,
            args,
            env={**node.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=node.root,
        )
    _record(
        node,
        ProcRecord(pid=proc.pid, argv=args, ns=node.ns, role=role, starttime=starttime(proc.pid)),
        vc,
    )
    return proc


def noded_argv(node: VNode, port: int = NODED_PORT) -> list[str]:
    return [str(BIN / "corral-noded"), "-f", "--bind", node.mgmt_ip, "--port", str(port)]


def start_node_daemon(
    node: VNode,
    *,
    command: Sequence[str] | None = None,
    port: int = NODED_PORT,
    timeout: float = 30.0,
    vc: VCluster | None = None,
) -> int:
    """Start ``corral-noded`` in ``node``'s namespace; return its PID once it accepts.

    ``command`` replaces the daemon for tests; ``{ip}``, ``{port}`` and
    ``{root}`` in it are filled in. Output goes to ``<root>/var/log/corral/noded.stderr``.
    """
    if command is None:
        argv = noded_argv(node, port)
        if not Path(argv[0]).exists():
            raise VClusterError(f"{argv[0]} is not installed")
    else:
        argv = [a.format(ip=node.mgmt_ip, port=port, root=node.root) for a in command]
    log = node.paths.log_dir / "noded.stderr"
    proc = spawn_in(node, argv, role="noded", log=log, vc=vc)
    if not net.wait_tcp(node.ns, node.mgmt_ip, port, timeout, alive=lambda: proc.poll() is None):
        if proc.poll() is None:
            stop(
                [
                    ProcRecord(
                        pid=proc.pid, argv=[_resolve(argv[0]), *argv[1:]], ns=node.ns, role="noded"
                    )
                ]
            )
        proc.poll()
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        raise VClusterError(
            f"node daemon on {node.name} ({node.mgmt_ip}:{port}) did not come up "
            f"(exit status {proc.returncode}):\n{tail.strip()}"
        )
    node.noded_pid = proc.pid
    if vc is not None:
        vc.save()
    return proc.pid


def init_cluster(
    vc: VCluster,
    *,
    noded_command: Sequence[str] | None = None,
    cluster_name: str = "vcluster",
    extra_init_args: Sequence[str] = (),
) -> None:
    """Bring the virtual cluster to life: a Corral cluster over all its nodes.

    Node 1 becomes the master: ``gnt-cluster init`` runs inside its namespace
    (writing the config and the cluster CA), then its ``corral-noded`` and
    ``corral-masterd`` start there. Every other node starts an unenrolled
    ``corral-noded`` and is enrolled with ``gnt-node add --join``, using the
    fingerprint and one-time token it prints with ``corral-noded --join-info``.
    A cluster made with OVN gets ``gnt-cluster modify --ovn-nb <NB on node1>``.
    With ``noded_command`` (tests of the network only) no cluster is created.
    """
    if noded_command is not None:
        for node in vc.nodes:
            start_node_daemon(node, command=noded_command, vc=vc)
        return
    master = vc.master
    run_in(
        master,
        [
            "gnt-cluster",
            "init",
            "--no-start-master",
            "--node-name",
            master.name,
            "--master-ip",
            master.mgmt_ip,
            "--noded-port",
            str(NODED_PORT),
            *extra_init_args,
            cluster_name,
        ],
        check=True,
    )
    start_node_daemon(master, vc=vc)
    spawn_in(
        master,
        ["corral-masterd", "-f"],
        role="masterd",
        log=master.paths.log_dir / "masterd.stderr",
        vc=vc,
    )
    deadline = time.monotonic() + 30
    while run_in(master, ["gnt-cluster", "getmaster"]).returncode != 0:
        if time.monotonic() > deadline:
            raise VClusterError("corral-masterd on the master node did not come up")
        time.sleep(0.05)
    for node in vc.nodes:
        if node is master:
            continue
        start_node_daemon(node, vc=vc)
        join = run_in(node, ["corral-noded", "--join-info"], check=True).stdout.strip()
        run_in(
            master,
            ["gnt-node", "add", "--primary-ip", node.mgmt_ip, "--join", join, node.name],
            check=True,
        )
    if vc.ovn:  # the nodes are chassis already: point the cluster at the NB
        from corral.vcluster import ovn as vovn

        nb = vovn.central(vc).nb_remote
        run_in(master, ["gnt-cluster", "modify", "--ovn-nb", nb], check=True)


@contextlib.contextmanager
def virtual_cluster(
    n: int = 3,
    prefix: str | None = None,
    base: str | Path | None = None,
    *,
    init: bool = True,
    noded_command: Sequence[str] | None = None,
    ovn: bool = False,
) -> Iterator[VCluster]:
    """``up`` (+ :func:`init_cluster` when ``init``), always ``down`` afterwards."""
    vc = up(n, prefix=prefix, base=base, ovn=ovn)
    try:
        if init:
            init_cluster(vc, noded_command=noded_command)
        yield vc
    finally:
        down(vc)
