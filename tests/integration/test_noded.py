"""corral-noded over real sockets: enrolment, mutual TLS, revocation, bad input, crashes.

Each test starts real ``corral-noded`` processes on 127.0.0.1 (free ports,
private roots) and kills them by PID at the end, also after a failure.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral import pki
from corral.daemons import noded
from corral.errors import RpcError
from corral.paths import Paths
from corral.rpc import defs, https
from corral.rpc import types as t
from corral.rpc.client import NodeTarget, RpcClient
from corral.testing.cluster import BIN

CLUSTER = "test-cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    paths: Paths
    port: int
    pid: int

    @property
    def target(self) -> NodeTarget:
        return NodeTarget(self.name, f"127.0.0.1:{self.port}")


class Harness:
    """A CA, a master identity (client certificate) and node daemons."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="corral-noded-test-"))
        self.ca, self.ca_key = pki.create_ca(CLUSTER)
        self.crl = pki.make_crl(self.ca, self.ca_key, [])
        self.nodes: list[Node] = []
        self.master = self.client_paths("master")

    def client_paths(self, name: str, ca: tuple[str, str] | None = None) -> Paths:
        """A root holding a client certificate for ``name`` (from ``ca``, default ours)."""
        paths = Paths(self.root / f"client-{name}")
        paths.pki_dir.mkdir(parents=True)
        cert, key = pki.issue_node_cert(*(ca or (self.ca, self.ca_key)), name, ["127.0.0.1"])
        paths.ca_cert.write_text(self.ca)
        paths.node_cert.write_text(cert)
        paths.node_key.write_text(key)
        return paths

    def start(self, name: str, enrol: bool = True) -> Node:
        paths = Paths(self.root / name)
        port = free_port()
        pid = noded.start_background(paths, "127.0.0.1", port)
        node = Node(name, paths, port, pid)
        self.nodes.append(node)
        if enrol:
            fp, token = noded.ensure_join_info(paths)
            asyncio.run(https.enroll("127.0.0.1", port, fp, token, self.payload(node)))
        return node

    def payload(self, node: Node) -> dict[str, Any]:
        cert, key = pki.issue_node_cert(self.ca, self.ca_key, node.name, ["127.0.0.1"])
        return {
            "node_name": node.name,
            "cluster_name": CLUSTER,
            "port": node.port,
            "ca_pem": self.ca,
            "cert_pem": cert,
            "key_pem": key,
            "crl_pem": self.crl,
        }

    def restart(self, node: Node) -> None:
        node.pid = noded.start_background(node.paths, "127.0.0.1", node.port)

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        with _suppress_lookup():
            os.kill(node.pid, sig)
        deadline = time.monotonic() + 10
        while noded.running(node.paths) is not None and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node, signal.SIGTERM)
            if noded.running(node.paths) is not None:
                self.kill(node, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: object, *rest: object) -> bool:
        return tp is ProcessLookupError


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def node1(harness: Harness) -> Node:
    """An enrolled node shared by the tests that do not change its state."""
    return harness.start("node1")


def call(paths: Paths, node: Node, rpc: defs.RpcCall[Any, Any], args: Any) -> Any:
    async def go() -> Any:
        transport = https.HttpsTransport(paths)
        try:
            return await RpcClient(transport).call(node.target, rpc, args)
        finally:
            await transport.close()

    return asyncio.run(go())


def tls_client(
    paths: Paths | None, ca_pem: str, cert: tuple[str, str] | None = None
) -> ssl.SSLContext:
    """A client context trusting ``ca_pem``, presenting ``cert`` or the one in ``paths``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem)
    if paths is not None:
        ctx.load_cert_chain(paths.node_cert, paths.node_key)
    elif cert is not None:
        d = Path(tempfile.mkdtemp(prefix="corral-cert-"))
        try:
            (d / "c.pem").write_text(cert[0])
            (d / "c.key").write_text(cert[1])
            ctx.load_cert_chain(d / "c.pem", d / "c.key")
        finally:
            shutil.rmtree(d)
    return ctx


def raw_post(
    node: Node, ctx: ssl.SSLContext, path: str = "/rpc/version", body: bytes = b"{}"
) -> bytes:
    """One HTTP request on a fresh TLS connection; returns the raw response bytes."""
    with (
        socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=node.name) as s,
    ):
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def assert_tls_refused(node: Node, ctx: ssl.SSLContext, reason: str) -> None:
    """The server refuses the client in the TLS layer: an alert, never an HTTP reply."""
    with pytest.raises(ssl.SSLError) as info:
        raw_post(node, ctx)
    assert reason in str(info.value).upper(), info.value


def https_request(
    node: Node,
    paths: Paths,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    ctx = pki.client_context(paths)
    ctx.check_hostname = (
        False  # http.client would check 127.0.0.1; the node name is checked elsewhere
    )
    conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# --- enrolment ---------------------------------------------------------------------------


def test_enrolment(harness: Harness) -> None:
    node = harness.start("node2", enrol=False)
    env = {**os.environ, "CORRAL_ROOT": str(node.paths.root)}
    out = subprocess.run(
        [str(BIN / "corral-noded"), "--join-info"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    fp, _, token = out.rpartition(":")
    assert fp == pki.fingerprint(node.paths.bootstrap_cert.read_text())
    assert token == node.paths.join_token.read_text().strip()
    assert node.paths.join_token.stat().st_mode & 0o777 == 0o600
    payload = harness.payload(node)

    def nothing_written() -> None:
        for p in (
            node.paths.node_cert,
            node.paths.node_key,
            node.paths.ca_cert,
            node.paths.node_identity,
        ):
            assert not p.exists(), p
        assert node.paths.join_token.exists()

    with pytest.raises(RpcError, match="refused the join token"):
        asyncio.run(https.enroll("127.0.0.1", node.port, fp, token + "x", payload))
    nothing_written()
    with pytest.raises(RpcError, match="presented certificate"):
        asyncio.run(https.enroll("127.0.0.1", node.port, "sha256:" + "ab" * 32, token, payload))
    nothing_written()
    # a certificate for another node name is refused too (after the token check)
    bad = {**payload, "node_name": "node3"}
    with pytest.raises(RpcError, match="not for node"):
        asyncio.run(https.enroll("127.0.0.1", node.port, fp, token, bad))
    nothing_written()
    # before enrolment there is no RPC service
    with pytest.raises(ssl.SSLError):
        raw_post(node, tls_client(harness.master, harness.ca))

    asyncio.run(https.enroll("127.0.0.1", node.port, fp, token, payload))
    assert not node.paths.join_token.exists()
    assert node.paths.node_key.stat().st_mode & 0o777 == 0o600
    assert json.loads(node.paths.node_identity.read_text()) == {
        "node": "node2",
        "cluster": CLUSTER,
        "port": node.port,
    }
    res = call(harness.master, node, defs.VERSION, t.Empty())
    assert res.get().protocol == defs.PROTOCOL_VERSION
    # enrolled now: the bootstrap certificate is gone from the port, the pin fails
    with pytest.raises(RpcError, match="presented certificate"):
        asyncio.run(https.enroll("127.0.0.1", node.port, fp, token, payload))
    out2 = subprocess.run(
        [str(BIN / "corral-noded"), "--join-info"], env=env, capture_output=True, text=True
    )
    assert out2.returncode == 1 and "already enrolled" in out2.stderr
    # after a restart it is still enrolled, on the same port
    harness.kill(node, signal.SIGTERM)
    harness.restart(node)
    assert call(harness.master, node, defs.VERSION, t.Empty()).get().protocol == 1


# --- mutual TLS --------------------------------------------------------------------------


def test_rpc_and_tls_refusals(harness: Harness, node1: Node) -> None:
    assert call(harness.master, node1, defs.VERSION, t.Empty()).get().software
    # the raw floor works with the master's certificate …
    assert raw_post(node1, tls_client(harness.master, harness.ca)).startswith(b"HTTP/1.1 200")
    # … and every other client is refused in the TLS handshake
    assert_tls_refused(node1, tls_client(None, harness.ca), "CERTIFICATE_REQUIRED")
    assert_tls_refused(
        node1, tls_client(None, harness.ca, cert=pki.self_signed("master")), "UNKNOWN_CA"
    )
    other_ca = pki.create_ca(CLUSTER)  # same name, other key
    stranger = pki.issue_node_cert(*other_ca, "master", ["127.0.0.1"])
    assert_tls_refused(node1, tls_client(None, harness.ca, cert=stranger), "UNKNOWN_CA")
    # the master refuses a node whose certificate is not for the name it called
    wrong = NodeTarget("node9", f"127.0.0.1:{node1.port}")

    async def go() -> None:
        transport = https.HttpsTransport(harness.master)
        try:
            with pytest.raises(RpcError, match=r"node9.*not node node9's"):
                await transport.request(wrong, "version", b"{}", 10)
        finally:
            await transport.close()

    asyncio.run(go())


def test_revocation_without_restart(harness: Harness) -> None:
    node = harness.start("node3")
    victim = harness.client_paths("node7")
    serial = pki.cert_serial(victim.node_cert.read_text())

    async def go() -> None:
        master_t = https.HttpsTransport(harness.master)
        victim_t = https.HttpsTransport(victim)
        master, vic = RpcClient(master_t), RpcClient(victim_t)
        try:
            assert not (await vic.call(node.target, defs.VERSION, t.Empty())).failed
            crl = pki.make_crl(harness.ca, harness.ca_key, [serial])
            (await master.call(node.target, defs.UPDATE_CRL, t.CrlArgs(crl_pem=crl))).get()
            # the victim's kept-alive connection is refused on its next request
            res = await vic.call(node.target, defs.VERSION, t.Empty())
            assert res.failed and "revoked" in (res.fail_msg or "")
            assert not (await master.call(node.target, defs.VERSION, t.Empty())).failed
            # a CRL of another CA is refused, and the installed one stays
            other = pki.create_ca(CLUSTER)
            res = await master.call(
                node.target, defs.UPDATE_CRL, t.CrlArgs(crl_pem=pki.make_crl(*other, []))
            )
            assert res.failed and "CRL" in (res.fail_msg or "")
            assert node.paths.crl.read_text() == crl
        finally:
            await master_t.close()
            await victim_t.close()

    asyncio.run(go())
    # new connections: the victim is refused in the handshake, others still work
    assert_tls_refused(node, tls_client(victim, harness.ca), "CERTIFICATE_REVOKED")
    assert raw_post(node, tls_client(harness.master, harness.ca)).startswith(b"HTTP/1.1 200")
    assert call(harness.master, node, defs.VERSION, t.Empty()).get().protocol == 1
    assert noded.running(node.paths) == node.pid  # no restart


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_gets_error_replies(harness: Harness, node1: Node) -> None:
    m = harness.master

    def err(status: int, reply: dict[str, Any], what: str) -> None:
        assert reply["ok"] is False and what in reply["error"]["message"], reply

    status, reply = https_request(node1, m, "POST", "/rpc/version", b"\x00\xff garbage")
    assert status == 200
    err(status, reply, "invalid arguments")
    status, reply = https_request(node1, m, "POST", "/rpc/no_such_call", b"{}")
    err(status, reply, "unknown RPC call")
    status, reply = https_request(node1, m, "POST", "/rpc/test_delay", b'{"duration": "long"}')
    err(status, reply, "invalid arguments for test_delay")
    status, reply = https_request(node1, m, "POST", "/rpc/test_delay", b'{"duration": 0, "x": 1}')
    err(status, reply, "invalid arguments")
    status, reply = https_request(node1, m, "POST", "/rpc/version", b"[]")
    err(status, reply, "invalid arguments")
    status, reply = https_request(node1, m, "GET", "/rpc/version")
    assert status == 405
    status, reply = https_request(node1, m, "POST", "/nowhere", b"{}")
    assert status == 404
    err(status, reply, "no such resource")
    status, reply = https_request(node1, m, "POST", "/enroll", b"{}")
    assert status == 409
    big = b" " * (16 * 1024 * 1024 + 1)
    status, reply = https_request(node1, m, "POST", "/rpc/version", big)
    assert status == 413
    err(status, reply, "too large")
    # garbage on the TLS connection itself
    ctx = tls_client(m, harness.ca)
    with (
        socket.create_connection(("127.0.0.1", node1.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="node1") as s,
    ):
        s.sendall(b"\x16\x03garbage\r\n\r\n")
        assert b" 400 Bad Request" in s.recv(100)
    # the same through the RPC client: an error result, not an exception
    res = call(m, node1, defs.TEST_DELAY, t.DelayArgs(duration=0))
    assert not res.failed
    assert noded.running(node1.paths) == node1.pid
    assert call(m, node1, defs.VERSION, t.Empty()).get().protocol == 1


# --- crashes and leaving -----------------------------------------------------------------


def test_killed_mid_call_then_restarted(harness: Harness) -> None:
    node = harness.start("node4")

    async def go() -> None:
        transport = https.HttpsTransport(harness.master)
        client = RpcClient(transport)
        try:
            assert not (await client.call(node.target, defs.VERSION, t.Empty())).failed
            slow = asyncio.create_task(
                client.call(node.target, defs.TEST_DELAY, t.DelayArgs(duration=5))
            )
            await asyncio.sleep(0.5)
            harness.kill(node)
            res = await asyncio.wait_for(slow, 5)
            assert res.failed and res.error is not None
            assert "node4" in res.fail_msg and "test_delay" in res.fail_msg, res.fail_msg
            with pytest.raises(RpcError, match=r"node4.*test_delay|test_delay.*node4") as info:
                res.get()
            assert info.value.fields == {"node": "node4", "call": "test_delay"}
            # the daemon is down: refused, with the node and the call named
            with pytest.raises(RpcError, match=r"cannot reach node node4 .* for version"):
                await transport.request(node.target, "version", b"{}", 5)
            await asyncio.to_thread(harness.restart, node)
            assert (await client.call(node.target, defs.VERSION, t.Empty())).get().protocol == 1
        finally:
            await transport.close()

    asyncio.run(go())


def test_leave_and_rejoin(harness: Harness) -> None:
    node = harness.start("node5")
    res = call(harness.master, node, defs.NODE_LEAVE, t.NodeLeaveArgs(cluster_name=CLUSTER))
    res.get()
    assert not node.paths.node_cert.exists()
    res = call(harness.master, node, defs.VERSION, t.Empty())
    assert res.failed and "node5" in (res.fail_msg or "")
    fp, token = noded.ensure_join_info(node.paths)
    # rejoin as a master candidate, which also gets the CA key; a wrong key is refused
    payload = harness.payload(node)
    wrong = {**payload, "ca_key_pem": pki.create_ca(CLUSTER)[1]}
    with pytest.raises(RpcError, match="CA key does not belong"):
        asyncio.run(https.enroll("127.0.0.1", node.port, fp, token, wrong))
    assert not node.paths.ca_key.exists() and not node.paths.node_cert.exists()
    payload["ca_key_pem"] = harness.ca_key
    asyncio.run(https.enroll("127.0.0.1", node.port, fp, token, payload))
    assert node.paths.ca_key.stat().st_mode & 0o777 == 0o600
    assert call(harness.master, node, defs.VERSION, t.Empty()).get().protocol == 1
    assert noded.running(node.paths) == node.pid


def test_one_daemon_per_root(harness: Harness, node1: Node) -> None:
    from corral.errors import DaemonError

    with pytest.raises(DaemonError, match="another corral-noded"):
        noded.start_background(node1.paths, "127.0.0.1", free_port(), timeout=10)
