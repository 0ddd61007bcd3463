"""A 3-node virtual cluster: real node daemons in namespaces, mutual-TLS RPC.

The tests share one virtual cluster and run in file order; the last one
(master failover) changes who the master is.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import vcluster as vcl
from corral.client import poll_until
from corral.daemons import noded
from corral.vcluster import net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")


@pytest.fixture(scope="module")
def vc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vcl.VCluster]:
    with vcl.virtual_cluster(3, base=tmp_path_factory.mktemp("vc") / "vc") as c:
        yield c


def gnt(
    vc: vcl.VCluster, *argv: str, check: bool = True, master: vcl.VNode | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a gnt-* command where the master is."""
    return vcl.run_in(master or vc.master, list(argv), check=check, timeout=120)


def serial_of(node: vcl.VNode) -> int | None:
    try:
        return int(json.loads(node.paths.config_file.read_bytes())["serial_no"])
    except (OSError, ValueError):
        return None


def master_serial(vc: vcl.VNode) -> int:
    s = serial_of(vc)
    assert s is not None
    return s


def test_nodes_enrolled(vc: vcl.VCluster) -> None:
    out = gnt(
        vc,
        "gnt-node",
        "list",
        "--no-headers",
        "--separator=|",
        "-o",
        "name,role,pip,master_candidate",
    ).stdout
    rows = [line.split("|") for line in out.splitlines()]
    assert rows == [
        ["node1", "M", "198.51.100.11", "Y"],
        ["node2", "C", "198.51.100.12", "Y"],
        ["node3", "C", "198.51.100.13", "Y"],
    ]
    # Live data comes from each node's daemon.
    out = gnt(
        vc,
        "gnt-node",
        "list",
        "--no-headers",
        "--separator=|",
        "-o",
        "name,mtotal,ctotal",
        "--units=m",
    ).stdout
    for line in out.splitlines():
        _, mtotal, ctotal = line.split("|")
        assert int(mtotal) > 0 and int(ctotal) >= 1
    info = gnt(vc, "gnt-node", "info", "node2").stdout
    assert "role: master candidate" in info and "primary ip: 198.51.100.12" in info
    assert gnt(vc, "gnt-cluster", "verify", check=False).returncode == 0


def test_lifecycle_through_rpc_on_each_node(vc: vcl.VCluster) -> None:
    for node in vc.nodes:
        gnt(
            vc,
            "gnt-instance",
            "add",
            "-t",
            "file",
            "--disk",
            "0:size=16M",
            "-n",
            node.name,
            f"on-{node.name}",
        )
    for node in vc.nodes:
        # The instance runs on its primary node: its state and disk are in that node's root.
        assert (node.paths.hv_run_dir("fake") / f"on-{node.name}").exists()
        assert list((node.paths.file_storage_dir).rglob("*.img"))
    out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "name,pnode,status").stdout
    assert out.split() == [
        "on-node1",
        "node1",
        "running",
        "on-node2",
        "node2",
        "running",
        "on-node3",
        "node3",
        "running",
    ]
    gnt(vc, "gnt-instance", "shutdown", "on-node2")
    assert not (vc.nodes[1].paths.hv_run_dir("fake") / "on-node2").exists()
    gnt(vc, "gnt-instance", "rename", "on-node2", "web2")
    gnt(vc, "gnt-instance", "startup", "web2")
    gnt(vc, "gnt-instance", "reboot", "--type", "full", "web2")
    assert (vc.nodes[1].paths.hv_run_dir("fake") / "web2").exists()
    gnt(vc, "gnt-instance", "remove", "-f", "web2")
    assert not list(vc.nodes[1].paths.file_storage_dir.rglob("*.img"))
    assert gnt(vc, "gnt-cluster", "verify", check=False).returncode == 0


def test_config_reaches_candidates_and_offline_catches_up(vc: vcl.VCluster) -> None:
    master, n2, n3 = vc.nodes
    gnt(vc, "gnt-cluster", "add-tags", "replicated")
    want = master_serial(master)
    assert poll_until(lambda: serial_of(n2) == want and serial_of(n3) == want, 15)
    gnt(vc, "gnt-node", "modify", "--offline", "yes", "--force", "node3")
    gnt(vc, "gnt-cluster", "add-tags", "while-node3-was-offline")
    want = master_serial(master)
    assert poll_until(lambda: serial_of(n2) == want, 15)
    assert (serial_of(n3) or 0) < want  # offline: nobody talks to it
    gnt(vc, "gnt-node", "modify", "--offline", "no", "node3")
    gnt(vc, "gnt-node", "modify", "--master-candidate", "yes", "node3")
    want = master_serial(master)
    assert poll_until(lambda: serial_of(n3) == want, 15)
    tags = json.loads(n3.paths.config_file.read_bytes())["cluster"]["tags"]
    assert "while-node3-was-offline" in tags


def test_noded_killed_mid_operation(vc: vcl.VCluster) -> None:
    n2 = vc.nodes[1]
    gnt(vc, "gnt-instance", "add", "--no-start", "-n", "node2", "-H", "fake:start_delay=4", "slow2")
    before = master_serial(vc.master)
    job = gnt(vc, "gnt-instance", "startup", "--submit", "slow2").stdout.split()[1]
    time.sleep(1.5)
    pid = noded.running(n2.paths)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    r = gnt(vc, "gnt-job", "watch", job, check=False)
    assert r.returncode != 0
    info = gnt(vc, "gnt-job", "info", job).stdout
    assert "node2" in info and "instance_start" in info
    # The config is intact and readable; the node comes back and serves again.
    assert master_serial(vc.master) >= before
    vcl.start_node_daemon(n2, vc=vc)
    gnt(vc, "gnt-instance", "shutdown", "slow2")
    gnt(vc, "gnt-instance", "startup", "slow2")
    out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "status", "slow2").stdout
    assert out.strip() == "running"
    gnt(vc, "gnt-instance", "remove", "-f", "slow2")


def _set_link(node: vcl.VNode, ifname: str, state: str) -> None:
    with net.ipr(node.ns) as r:
        (idx,) = r.link_lookup(ifname=ifname)
        r.link("set", index=idx, state=state)


def test_partition_of_one_node(vc: vcl.VCluster) -> None:
    n3 = vc.nodes[2]
    _set_link(n3, "mgmt0", "down")
    try:
        t0 = time.monotonic()
        out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "name,status").stdout
        assert time.monotonic() - t0 < 30
        status = dict(line.split() for line in out.splitlines())
        assert status["on-node3"] == "ERROR_nodedown"
        assert status["on-node1"] == "running"
        # Operations not involving node3 keep working.
        gnt(vc, "gnt-instance", "reboot", "on-node1")
        # Those involving it fail with a message naming the node.
        r = gnt(vc, "gnt-instance", "shutdown", "on-node3", check=False)
        assert r.returncode != 0 and "node3" in r.stderr
    finally:
        _set_link(n3, "mgmt0", "up")
    assert poll_until(
        lambda: (
            gnt(vc, "gnt-node", "list", "-o", "mtotal", "--no-headers", "node3").stdout.strip()
            not in ("?", "")
        ),
        20,
    )


def _tls_handshake(ns: str, host: str, cert: Path, key: Path, ca: Path) -> None:
    def go() -> None:
        import socket

        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(cert), str(key))
        with (
            socket.create_connection((host, vcl.NODED_PORT), timeout=5) as s,
            ctx.wrap_socket(s) as tls,
        ):
            tls.sendall(
                b"POST /rpc/version HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\n{}"
            )
            data = tls.recv(4096)
            if not data:
                raise ssl.SSLError("connection closed by the server")

    net.in_ns(ns, go)


def test_node_remove_revokes_certificate(vc: vcl.VCluster, tmp_path: Path) -> None:
    _, n2, n3 = vc.nodes
    gnt(vc, "gnt-instance", "remove", "-f", "on-node3")
    # Keep node3's credentials, as a thief would.
    for f in ("node.pem", "node.key", "ca.pem"):
        (tmp_path / f).write_bytes((n3.paths.pki_dir / f).read_bytes())
    _tls_handshake(
        n3.ns, n2.mgmt_ip, tmp_path / "node.pem", tmp_path / "node.key", tmp_path / "ca.pem"
    )  # works while node3 is a member
    gnt(vc, "gnt-node", "remove", "node3")
    assert "node3" not in gnt(vc, "gnt-node", "list", "-o", "name").stdout
    with pytest.raises(ssl.SSLError):
        _tls_handshake(
            n3.ns, n2.mgmt_ip, tmp_path / "node.pem", tmp_path / "node.key", tmp_path / "ca.pem"
        )
    # The removed node forgot the cluster; it can be enrolled again with a new token.
    assert not n3.paths.node_cert.exists()
    join = vcl.run_in(n3, ["corral-noded", "--join-info"], check=True).stdout.strip()
    gnt(vc, "gnt-node", "add", "--primary-ip", n3.mgmt_ip, "--join", join, "node3")
    assert gnt(vc, "gnt-cluster", "verify", check=False).returncode == 0


def test_master_failover_with_voting(vc: vcl.VCluster) -> None:
    old, new, third = vc.nodes
    want = master_serial(old)
    assert poll_until(lambda: serial_of(new) == want and serial_of(third) == want, 15)
    # The master dies (both daemons).
    from corral import bootstrap

    bootstrap.stop_masterd(old.paths, sig=signal.SIGKILL)
    noded.stop(old.paths, sig=signal.SIGKILL)
    r = vcl.run_in(new, ["gnt-cluster", "master-failover"], check=True)
    assert "node2 is the master (was node1)" in r.stdout
    assert gnt(vc, "gnt-cluster", "getmaster", master=new).stdout.strip() == "node2"
    gnt(vc, "gnt-instance", "add", "-n", "node3", "after-failover", master=new)
    # The old master comes back: its node daemon serves again, but its master
    # daemon refuses to run because the majority says node2 is the master.
    vcl.start_node_daemon(old, vc=vc)
    r = vcl.run_in(old, ["corral-masterd"], check=False)
    assert r.returncode != 0
    assert "no longer the master" in r.stderr + r.stdout
    # It catches up with the new configuration and agrees.
    assert poll_until(lambda: (serial_of(old) or 0) >= master_serial(new), 20)
    assert gnt(vc, "gnt-cluster", "verify", check=False, master=new).returncode == 0


def test_failover_back_stops_the_live_old_master(vc: vcl.VCluster) -> None:
    """Failing over while the old master still runs: its master daemon is stopped first."""
    from corral import bootstrap

    node1, node2, _ = vc.nodes
    assert bootstrap.masterd_running(node2.paths) is not None
    assert poll_until(lambda: (serial_of(node1) or 0) >= master_serial(node2), 20)
    r = vcl.run_in(node1, ["gnt-cluster", "master-failover"], check=True)
    assert "node1 is the master (was node2)" in r.stdout
    assert bootstrap.masterd_running(node2.paths) is None  # no second master
    assert gnt(vc, "gnt-cluster", "getmaster", master=node1).stdout.strip() == "node1"
    out = gnt(vc, "gnt-instance", "list", "--no-headers", "-o", "name", master=node1).stdout
    assert "after-failover" in out.split()
    assert gnt(vc, "gnt-cluster", "verify", check=False, master=node1).returncode == 0
