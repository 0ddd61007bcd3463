"""The virtual cluster: namespaces, switch, node roots, daemons, and cleanup.

Needs root (network namespaces). Uses the real ``corral-noded`` when it is
installed, else a stand-in TCP server with the same ``--bind``/port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.bootstrap import DEFAULT_SHARED_FILE_STORAGE_DIR
from corral.vcluster import cluster as vcl
from corral.vcluster import model, net, teardown
from corral.vcluster.proc import cmdline

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(120),
]

BIN = Path(sys.executable).parent
NODED_CMD = (
    None
    if (BIN / "corral-noded").exists()
    else [sys.executable, "-m", "http.server", "--bind", "{ip}", "{port}"]
)


def _host_links() -> list[str]:
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    with IPRoute() as r:
        return [m.get_attr("IFLA_IFNAME") for m in r.get_links()]


def _assert_gone(prefix: str, base: Path, pids: list[int]) -> None:
    assert net.list_ns(prefix) == []
    assert not [n for n in _host_links() if n.startswith(prefix)]
    for pid in pids:
        assert cmdline(pid) is None, f"process {pid} still running"
    assert not base.exists()


@pytest.fixture
def vc(tmp_path: Path) -> Iterator[vcl.VCluster]:
    with vcl.virtual_cluster(3, base=tmp_path / "vc", noded_command=NODED_CMD) as c:
        yield c


def test_layout(vc: vcl.VCluster) -> None:
    p = vc.prefix
    assert net.list_ns(p) == sorted([f"{p}sw", f"{p}n1", f"{p}n2", f"{p}n3"])
    sw = net.links(vc.switch_ns)
    assert sw["mgmt"].kind == "bridge" and sw["mgmt"].up
    assert sw["vmnet"].kind == "bridge" and sw["vmnet"].up
    assert sw["mgmt"].mac != sw["vmnet"].mac
    for i in (1, 2, 3):
        assert sw[f"{p}m{i}"].master == "mgmt" and sw[f"{p}m{i}"].up
        assert sw[f"{p}v{i}"].master == "vmnet" and sw[f"{p}v{i}"].up
    # The switch has no addresses but loopback's.
    assert set(net.addresses(vc.switch_ns)) <= {"lo"}
    for node in vc.nodes:
        links = net.links(node.ns)
        assert links["mgmt0"].up and links["mgmt0"].kind == "veth"
        assert links["br0"].kind == "bridge" and links["br0"].up
        assert links["vmnet0"].master == "br0" and links["vmnet0"].up
        addrs = net.addresses(node.ns)
        # Exactly the management address; br0 carries none, no IPv6 link-local.
        assert addrs["mgmt0"] == [f"198.51.100.{10 + node.index}/24"]
        assert "br0" not in addrs and "vmnet0" not in addrs
        assert Path(node.root).is_dir() and Path(node.root).name == node.ns
        assert node.noded_pid and cmdline(node.noded_pid)
    # Nothing of ours in the host namespace.
    assert not [n for n in _host_links() if n.startswith(p)]
    state = json.loads(vc.state_file.read_text())
    assert state["prefix"] == p and state["complete"]
    assert [n["noded_pid"] for n in state["nodes"]] == [n.noded_pid for n in vc.nodes]


def test_nodes_reach_each_other_over_mgmt(vc: vcl.VCluster) -> None:
    for a in vc.nodes:
        for b in vc.nodes:
            assert net.tcp_connect(a.ns, b.mgmt_ip, vcl.NODED_PORT), (a.name, b.name)
    # run_in runs inside the node's namespace, with CORRAL_ROOT set.
    r = vcl.run_in(
        vc.nodes[1],
        [
            sys.executable,
            "-c",
            "import os, socket; print(os.environ['CORRAL_ROOT']);"
            "print(sorted(n for _, n in socket.if_nameindex()))",
        ],
        check=True,
    )
    root, names = r.stdout.splitlines()
    assert root == vc.nodes[1].root
    assert names == str(sorted(["lo", "mgmt0", "vmnet0", "br0"]))


def test_vm_network_spans_nodes(vc: vcl.VCluster) -> None:
    g1 = vcl.add_guest_ns(vc, vc.nodes[0], 1, "203.0.113.11")
    g3 = vcl.add_guest_ns(vc, vc.nodes[2], 3, "203.0.113.13")
    assert net.links(vc.nodes[0].ns)["g1"].master == "br0"
    srv = net.in_ns(g3, lambda: socket.create_server(("203.0.113.13", 7777)))
    try:
        assert net.tcp_connect(g1, "203.0.113.13", 7777, timeout=3)
    finally:
        srv.close()
    # The VM network is separate from management: a node has no route to it.
    assert not net.tcp_connect(vc.nodes[0].ns, "203.0.113.13", 7777, timeout=1)
    assert g1 in json.loads(vc.state_file.read_text())["namespaces"]


def test_status_lists_nodes(vc: vcl.VCluster) -> None:
    r = subprocess.run(
        [str(BIN / "corral"), "vcluster", "status", "--root", str(vc.base)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    for node in vc.nodes:
        line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == [node.name])
        assert node.ns in line and node.mgmt_ip in line and f"pid {node.noded_pid}" in line
    info = teardown.status(vc.base)
    assert [n["name"] for n in info["nodes"]] == ["node1", "node2", "node3"]
    assert all(n["noded_running"] for n in info["nodes"])


def test_down_removes_everything(tmp_path: Path) -> None:
    base = tmp_path / "vc"
    vc = vcl.up(2, base=base)
    try:
        vcl.init_cluster(vc, noded_command=NODED_CMD)
        vcl.add_guest_ns(vc, vc.nodes[0], 1, "203.0.113.21")
        pids = [n.noded_pid for n in vc.nodes if n.noded_pid]
        assert len(pids) == 2
    finally:
        report = vcl.down(vc)
    # The node daemons, and with the real corral-noded also the master daemon.
    assert set(pids) <= set(report.stopped)
    assert len(report.stopped) == len(pids) + (NODED_CMD is None)
    assert len(report.namespaces) == 4 and not report.leftovers
    assert str(vc.shared_dir) in report.dirs
    _assert_gone(vc.prefix, base, pids)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_down_after_crash(tmp_path: Path, damage: str) -> None:
    base = tmp_path / "vc"
    vc = vcl.up(3, base=base)
    try:
        vcl.init_cluster(vc, noded_command=NODED_CMD)
        pids = [n.noded_pid for n in vc.nodes if n.noded_pid]
        os.kill(pids[1], signal.SIGKILL)
        if damage == "delete":
            vc.state_file.unlink()
        else:
            vc.state_file.write_text(vc.state_file.read_text()[:40])
        # down from the CLI, knowing only the directory: the prefix comes from
        # the node directories, the daemons from the per-node records.
        r = subprocess.run(
            [str(BIN / "corral"), "vcluster", "down", "--root", str(base)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        # Two live node daemons (one was killed), plus masterd with the real noded.
        assert f"stopped {2 + (NODED_CMD is None)} processes" in r.stdout
    finally:
        vcl.down(base, prefix=vc.prefix)  # no-op when the test passed
    _assert_gone(vc.prefix, base, pids)


def test_failed_up_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = net.add_address
    prefix = vcl.new_prefix()

    def flaky(ns: str, ifname: str, address: str, prefixlen: int) -> None:
        if ns.endswith("n2"):
            raise net.NetError("injected failure")
        real(ns, ifname, address, prefixlen)

    monkeypatch.setattr(net, "add_address", flaky)
    with pytest.raises(net.NetError, match="injected"):
        vcl.up(3, prefix=prefix, base=tmp_path / "vc")
    _assert_gone(prefix, tmp_path / "vc", [])


def test_cli_up_status_down(tmp_path: Path) -> None:
    base = tmp_path / "vc"
    prefix = vcl.new_prefix()
    corral = str(BIN / "corral")
    try:
        r = subprocess.run(
            [
                corral,
                "vcluster",
                "up",
                "--nodes",
                "2",
                "--prefix",
                prefix,
                "--root",
                str(base),
                "--no-init",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert f"{prefix}n2" in r.stdout
        assert net.list_ns(prefix) == [f"{prefix}n1", f"{prefix}n2", f"{prefix}sw"]
        r = subprocess.run(
            [corral, "vcluster", "status", "--root", str(base), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        [info] = json.loads(r.stdout)
        assert [n["mgmt_ip"] for n in info["nodes"]] == ["198.51.100.11", "198.51.100.12"]
        r = subprocess.run(
            [corral, "vcluster", "down", "--root", str(base)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    finally:
        vcl.down(base, prefix=prefix)
    _assert_gone(prefix, base, [])


# --- shared storage: one directory behind every node's shared file storage path -------------


def _shared_path(node: model.VNode) -> Path:
    return node.paths.host_path(DEFAULT_SHARED_FILE_STORAGE_DIR)


def test_shared_storage_is_one_directory(vc: model.VCluster) -> None:
    # The vcluster links the path bootstrap uses (it keeps a copy to start lean).
    assert model.SHARED_FILE_STORAGE_DIR == DEFAULT_SHARED_FILE_STORAGE_DIR
    n1, n2, n3 = vc.nodes
    for node in vc.nodes:
        assert _shared_path(node).is_symlink()
        assert _shared_path(node).resolve() == vc.shared_dir
    (_shared_path(n1) / "inst-x").mkdir()
    (_shared_path(n1) / "inst-x" / "disk0.img").write_bytes(b"written through node1")
    # What a process on node2 sees at the cluster-wide path, under its own root.
    r = vcl.run_in(
        n2,
        [
            sys.executable,
            "-c",
            "import os, sys; from corral.paths import Paths;"
            "p = Paths.from_env().host_path(sys.argv[1] + '/inst-x/disk0.img');"
            "print(open(p).read())",
            DEFAULT_SHARED_FILE_STORAGE_DIR,
        ],
        check=True,
    )
    assert r.stdout.strip() == "written through node1"
    (_shared_path(n3) / "inst-x" / "disk0.img").unlink()
    assert not (_shared_path(n1) / "inst-x" / "disk0.img").exists()
    assert teardown.status(vc.base)["shared_storage"] == str(vc.shared_dir)
    assert str(vc.shared_dir) in json.loads(vc.state_file.read_text())["dirs"]


def test_down_after_crash_removes_shared_storage(tmp_path: Path) -> None:
    base = tmp_path / "vc"
    vc = vcl.up(1, base=base)
    (vc.shared_dir / "leftover.img").write_bytes(b"x")
    vc.state_file.unlink()
    report = vcl.down(base)  # the prefix from the directories alone
    assert report.prefix == vc.prefix
    assert str(vc.shared_dir) in report.dirs
    _assert_gone(vc.prefix, base, [])


def test_link_another_shared_path(tmp_path: Path) -> None:
    vc = vcl.up(2, base=tmp_path / "vc")
    try:
        vcl.link_shared_dir(vc, "/srv/other-shared")
        vcl.link_shared_dir(vc, "/srv/other-shared")  # again: already so, no error
        for node in vc.nodes:
            assert node.paths.host_path("/srv/other-shared").resolve() == vc.shared_dir
        (vc.nodes[0].paths.file_storage_dir).mkdir(parents=True)
        with pytest.raises(model.VClusterError, match="exists already"):
            vcl.link_shared_dir(vc, "/srv/corral/file-storage")  # node1 has its own dir
        with pytest.raises(model.VClusterError, match="absolute"):
            vcl.link_shared_dir(vc, "srv/x")
    finally:
        vcl.down(vc)
    _assert_gone(vc.prefix, tmp_path / "vc", [])


@pytest.mark.skipif(NODED_CMD is not None, reason="needs the real corral-noded")
def test_sharedfile_instance_in_two_node_cluster(tmp_path: Path) -> None:
    with vcl.virtual_cluster(2, base=tmp_path / "vc") as vc:
        n1, n2 = vc.nodes

        def gnt(*argv: str) -> str:
            return vcl.run_in(n1, list(argv), check=True).stdout

        # gnt-cluster init created the directory through node1's link, kept the link.
        assert _shared_path(n1).is_symlink() and _shared_path(n2).is_symlink()
        info = gnt("gnt-cluster", "info")
        assert f"shared file storage path: {DEFAULT_SHARED_FILE_STORAGE_DIR}" in info
        gnt("gnt-instance", "add", "-t", "sharedfile", "--disk", "0:size=16M", "-n", "node2", "s1")
        out = gnt("gnt-instance", "list", "--no-headers", "-o", "name,pnode,status,disk_template")
        assert out.split() == ["s1", "node2", "running", "sharedfile"]
        # Created by node2's daemon, the image is the same file from node1's root.
        on_n2 = sorted(_shared_path(n2).rglob("*.img"))
        on_n1 = sorted(_shared_path(n1).rglob("*.img"))
        assert len(on_n2) == 1
        assert [p.relative_to(_shared_path(n1)) for p in on_n1] == [
            p.relative_to(_shared_path(n2)) for p in on_n2
        ]
        assert os.path.samefile(on_n1[0], on_n2[0])
        assert on_n1[0].stat().st_size == 16 << 20
        assert not list(n2.paths.file_storage_dir.rglob("*.img"))  # not the per-node dir
        gnt("gnt-instance", "remove", "-f", "s1")
        assert not list(_shared_path(n1).rglob("*.img"))
        shared = vc.shared_dir
    assert not shared.exists()
