"""Node RPC benchmark: fan-out of ``version`` over HTTPS with mutual TLS.

Starts 20 ``corral-noded`` processes on 127.0.0.1 (distinct free ports,
private roots), enrols them through ``/enroll`` like ``gnt-node add`` does,
then measures from one master process:

* ``rpc_fanout_3`` / ``rpc_fanout_20``: ``RpcClient.call_multi(version)``
  to 3 and to 20 nodes (``HttpsTransport``: aiohttp session, kept-alive
  mTLS connections, encode → HTTP → dispatch → decode), milliseconds.
* Floor, in the same run and interleaved: the same daemons, the same TLS
  contexts and kept-alive connections, but a bare HTTP/1.1 request of a
  trivial path (noded's 404) written and read on raw asyncio SSL streams,
  in parallel to the same nodes.

Targets (issue "Nodes"): p50 <= 20 ms for 20 nodes, ratio <= 2.

Run: ``.venv/bin/python bench/rpc.py`` (or ``make bench``); about 20 s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Row, figure, machine_note, percentile, print_table
from corral import pki
from corral.daemons import noded
from corral.paths import Paths
from corral.rpc import defs, https
from corral.rpc import types as t
from corral.rpc.client import NodeTarget, RpcClient

NODES = 20
WARMUP = 30
RUNS = {3: 400, 20: 300}
FLOOR_REQUEST = b"GET /ping HTTP/1.1\r\nHost: node\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Floor:
    """Kept-alive raw TLS connections; one trivial request per node, in parallel."""

    def __init__(self, ctx: ssl.SSLContext, targets: list[NodeTarget]) -> None:
        self.ctx = ctx
        self.targets = targets
        self.conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def connect(self) -> None:
        for n in self.targets:
            host, port = https.split_address(n.address, https.DEFAULT_PORT)
            self.conns[n.name] = await asyncio.open_connection(
                host, port, ssl=self.ctx, server_hostname=n.name
            )

    async def one(self, name: str) -> None:
        reader, writer = self.conns[name]
        writer.write(FLOOR_REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)

    async def fanout(self, names: list[str]) -> None:
        await asyncio.gather(*(self.one(n) for n in names))

    async def close(self) -> None:
        for _, w in self.conns.values():
            w.close()


async def measure(
    master: Paths, targets: list[NodeTarget]
) -> dict[int, tuple[list[float], list[float]]]:
    transport = https.HttpsTransport(master)
    client = RpcClient(transport)
    floor = Floor(pki.client_context(master), targets)
    await floor.connect()
    out: dict[int, tuple[list[float], list[float]]] = {}
    try:
        for n, runs in RUNS.items():
            subset = targets[:n]
            names = [x.name for x in subset]
            for _ in range(WARMUP):
                res = await client.call_multi(subset, defs.VERSION, t.Empty())
                bad = [r.fail_msg for r in res.values() if r.failed]
                assert not bad, bad
                await floor.fanout(names)
            corral_ms: list[float] = []
            floor_ms: list[float] = []
            for i in range(runs):  # interleaved, alternating order: drift hits both alike
                for which in (0, 1) if i % 2 else (1, 0):
                    t0 = time.perf_counter()
                    if which == 0:
                        await client.call_multi(subset, defs.VERSION, t.Empty())
                        corral_ms.append((time.perf_counter() - t0) * 1e3)
                    else:
                        await floor.fanout(names)
                        floor_ms.append((time.perf_counter() - t0) * 1e3)
            out[n] = (corral_ms, floor_ms)
    finally:
        await floor.close()
        await transport.close()
    return out


def main() -> int:
    note = machine_note()
    root = Path(tempfile.mkdtemp(prefix="corral-bench-rpc-"))
    ca, ca_key = pki.create_ca("bench")
    crl = pki.make_crl(ca, ca_key, [])
    master = Paths(root / "master")
    master.pki_dir.mkdir(parents=True)
    mcert, mkey = pki.issue_node_cert(ca, ca_key, "master", ["127.0.0.1"])
    master.ca_cert.write_text(ca)
    master.node_cert.write_text(mcert)
    master.node_key.write_text(mkey)
    master.crl.write_text(crl)
    nodes: list[tuple[str, Paths, int]] = [
        (f"node{i + 1}", Paths(root / f"node{i + 1}"), free_port()) for i in range(NODES)
    ]
    pids: list[int] = []
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            pids += pool.map(lambda n: noded.start_background(n[1], "127.0.0.1", n[2]), nodes)
        started = time.monotonic() - t0

        async def enrol_all() -> None:
            for name, paths, port in nodes:
                fp, token = noded.ensure_join_info(paths)
                cert, key = pki.issue_node_cert(ca, ca_key, name, ["127.0.0.1"])
                payload = {
                    "node_name": name,
                    "cluster_name": "bench",
                    "port": port,
                    "ca_pem": ca,
                    "cert_pem": cert,
                    "key_pem": key,
                    "crl_pem": crl,
                }
                await https.enroll("127.0.0.1", port, fp, token, payload)

        asyncio.run(enrol_all())
        print(f"{NODES} node daemons started in {started:.1f} s and enrolled")
        targets = [NodeTarget(name, f"127.0.0.1:{port}") for name, _, port in nodes]
        results = asyncio.run(measure(master, targets))
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, paths, _ in nodes:
            deadline = time.monotonic() + 10
            while noded.running(paths) is not None and time.monotonic() < deadline:
                time.sleep(0.01)
        shutil.rmtree(root, ignore_errors=True)

    rows: list[Row] = []
    for n, (corral_ms, floor_ms) in results.items():
        rows.append(Row(f"bare TLS request x{n} nodes (floor)", floor_ms, "ms", "raw SSL streams"))
        target = "target p50 <= 20 ms, ratio <= 2" if n == 20 else ""
        rows.append(Row(f"call_multi(version) x{n} nodes", corral_ms, "ms", target))
    print_table(f"Node RPC fan-out over mTLS, {NODES} noded on 127.0.0.1 ({note})", rows)
    print()
    for n, (corral_ms, floor_ms) in results.items():
        print(
            f"  x{n}: corral p99 {percentile(corral_ms, 99):.2f} ms, "
            f"floor p99 {percentile(floor_ms, 99):.2f} ms"
        )
    print()
    for n, (corral_ms, floor_ms) in results.items():
        c = Row("", corral_ms, "ms").median
        f = Row("", floor_ms, "ms").median
        print(figure(f"rpc_fanout_{n}", c, f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
