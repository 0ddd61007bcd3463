"""Large-cluster benchmark: ``gnt-instance list`` and config writes at 10k instances.

Builds a throw-away cluster with the library: ``gnt-cluster init
--no-start-master``, then 99 more nodes (same group) and 10,000 diskless
fake-hypervisor instances (one NIC each, unique MACs, every third one
``admin_state`` up) spread over the 100 nodes, saved with
:func:`corral.config.store.save`; then the master daemon is started. Only
the master node is reachable here (other nodes' RPCs fail fast); the list
still shows every instance.

* ``list_10k``: the whole ``gnt-instance list`` process (default fields),
  seconds. Floor: the same kind of CLI process doing a trivial call
  (``gnt-cluster getmaster``: Python start-up, imports, one round trip)
  against the same cluster, interleaved with the lists.
* ``config_write_10k``: :func:`corral.config.store.save` of that config
  (encode + temp file + fsync + rename + directory fsync), milliseconds.
  Floor: writing the same bytes atomically with plain ``os.write`` +
  ``fsync`` + ``rename`` + directory ``fsync``, interleaved.

CLI processes get a private bytecode cache (``PYTHONPYCACHEPREFIX`` under
the cluster's root, removed at the end) like an installed package has, even
when the caller sets ``PYTHONDONTWRITEBYTECODE``; one extra row shows the
list without any bytecode cache.

Targets (issue "cluster core"): list ≤ 0.5 s, config write ≤ 100 ms.

Run: ``.venv/bin/python bench/list.py`` (or ``make bench``); about 40 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Row, figure, machine_note, print_table
from corral.config import store
from corral.config.writer import ConfigWriter
from corral.objects import NIC, ConfigData, Instance, Node
from corral.testing.cluster import BIN, TempCluster

NODES = 100
INSTANCES = 10_000
CLI_RUNS = 15
NO_PYC_RUNS = 5
WRITE_RUNS = 21
QUERY_RUNS = 11
DEFAULT_FIELDS = ["name", "hypervisor", "os", "pnode", "status", "oper_ram"]

# Run in a fresh process (like the CLI, and away from this script's own copy of
# the 10k config, which would slow the garbage collector): the list's phases.
PHASES = """
import io, json, sys, time
from argparse import Namespace
from corral import luxi
from corral.cli import common
from corral.client import Client
class Canned:  # a client whose query answers with the reply already received
    def __init__(self, result):
        self.result = result
    def query(self, *args):
        return self.result
fields = json.loads(sys.argv[1])
runs = int(sys.argv[2])
sock = Client()._connect()
out = {"query": [], "decode": [], "format": []}
for _ in range(runs):
    t0 = time.perf_counter()
    sock.sendall(luxi.encode_request("Query", ["instance", fields, None, None]))
    buf = bytearray()
    while not buf.endswith(luxi.ETX):
        buf += sock.recv(1 << 20)
    t1 = time.perf_counter()
    result = luxi.decode_reply(bytes(buf[:-1])).result
    t2 = time.perf_counter()
    args = Namespace(output=None, filter=None, units=None, separator=None, no_headers=False)
    real, sys.stdout = sys.stdout, io.StringIO()
    try:
        common.list_command(Canned(result), "instance", args, fields)
    finally:
        sys.stdout = real
    t3 = time.perf_counter()
    assert len(result["data"]) > 0
    out["query"].append(t1 - t0)
    out["decode"].append(t2 - t1)
    out["format"].append(t3 - t2)
print(json.dumps(out))
"""


def build_config(cfg: ConfigData) -> None:
    master = cfg.nodes[cfg.cluster.master_node]
    nodes = [master]
    for k in range(2, NODES + 1):
        node = Node(
            name=f"node{k}",
            primary_ip=f"127.0.1.{k}",
            secondary_ip=f"127.0.1.{k}",
            group=master.group,
            master_candidate=False,  # else masterd start-up needs their votes
        )
        cfg.nodes[node.uuid] = node
        nodes.append(node)
    for k in range(INSTANCES):
        inst = Instance(
            name=f"inst{k}.example.com",
            primary_node=nodes[k % NODES].uuid,
            hypervisor="fake",
            os="debootstrap+default",
            admin_state="up" if k % 3 == 0 else "down",
            nics=[NIC(mac=f"aa:00:00:{(k >> 16) & 255:02x}:{(k >> 8) & 255:02x}:{k & 255:02x}")],
        )
        cfg.instances[inst.uuid] = inst


def run_cli(cluster: TempCluster, env: dict[str, str], *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed, proc.stdout


def plain_atomic_write(path: Path, data: bytes) -> None:
    """The floor: the same bytes, written atomically with nothing but syscalls."""
    tmp = path.with_name(path.name + ".floor")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def writer_commit(writer: ConfigWriter) -> float:
    writer.data.serial_no += 1  # what every mutation does
    t = time.perf_counter()
    await writer.commit()
    return time.perf_counter() - t


def main() -> int:
    note = machine_note()
    cluster = TempCluster(prefix="corral-bench-list-", init=False)
    try:
        env = {k: v for k, v in cluster.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(cluster.root / "pycache")
        cluster.env = env
        no_pyc_env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
        no_pyc_env.pop("PYTHONPYCACHEPREFIX")

        t0 = time.perf_counter()
        cluster.run(
            "gnt-cluster", "init", "--no-start-master", "--node-name", "node1", "bench", check=True
        )
        cfg = store.load(cluster.paths.config_file)
        build_config(cfg)
        store.save(cluster.paths.config_file, cfg)
        cluster.start_masterd()
        build_s = time.perf_counter() - t0
        size = cluster.paths.config_file.stat().st_size

        # --- config writes -----------------------------------------------------------
        target = cluster.paths.config_file.with_name("config.data.bench")
        blob = store.encode(cfg)
        writer = ConfigWriter(target, cfg)
        loop = asyncio.new_event_loop()
        save_ms: list[float] = []
        floor_w_ms: list[float] = []
        encode_ms: list[float] = []
        commit_ms: list[float] = []
        try:
            for _ in range(WRITE_RUNS):
                t = time.perf_counter()
                plain_atomic_write(target, blob)
                floor_w_ms.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                store.save(target, cfg)
                save_ms.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                store.encode(cfg)
                encode_ms.append((time.perf_counter() - t) * 1e3)
                commit_ms.append(loop.run_until_complete(writer_commit(writer)) * 1e3)
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        target.unlink()

        # --- the list ----------------------------------------------------------------
        _, out = run_cli(cluster, env, "gnt-instance", "list")  # warm-up, fills the cache
        lines = out.splitlines()
        if len(lines) != INSTANCES + 1:
            raise SystemExit(f"gnt-instance list printed {len(lines)} lines")
        _, out = run_cli(cluster, env, "gnt-cluster", "getmaster")
        if out.strip() != "node1":
            raise SystemExit(f"gnt-cluster getmaster printed {out!r}")
        list_s: list[float] = []
        floor_s: list[float] = []
        for _ in range(CLI_RUNS):
            floor_s.append(run_cli(cluster, env, "gnt-cluster", "getmaster")[0])
            list_s.append(run_cli(cluster, env, "gnt-instance", "list")[0])
        no_pyc_s = [
            run_cli(cluster, no_pyc_env, "gnt-instance", "list")[0] for _ in range(NO_PYC_RUNS)
        ]

        # --- phases of the list ---------------------------------------------------------
        import_s = [
            run_cli(cluster, env, "python", "-c", "import corral.cli.gnt_instance")[0]
            for _ in range(CLI_RUNS)
        ]
        bare_s = [run_cli(cluster, env, "python", "-c", "pass")[0] for _ in range(CLI_RUNS)]
        _, out = run_cli(
            cluster, env, "python", "-c", PHASES, json.dumps(DEFAULT_FIELDS), str(QUERY_RUNS)
        )
        phases = json.loads(out)
    finally:
        cluster.close()

    rows_list = [
        Row("gnt-cluster getmaster (floor)", floor_s, "s"),
        Row("gnt-instance list, 10k instances", list_s, "s", "target <= 0.5 s"),
        Row("  same, no bytecode cache", no_pyc_s, "s", "PYTHONDONTWRITEBYTECODE=1"),
        Row("  phase: python -c pass", bare_s, "s"),
        Row("  phase: import corral.cli.gnt_instance", import_s, "s", "incl. start-up"),
        Row("  phase: Query, master + transfer", phases["query"], "s", "raw LUXI bytes"),
        Row("  phase: decode the reply", phases["decode"], "s"),
        Row("  phase: format + print the table", phases["format"], "s", "to memory"),
    ]
    rows_write = [
        Row("plain atomic write, same bytes (floor)", floor_w_ms, "ms", f"{size / 1e6:.1f} MB"),
        Row("store.save, 10k instances", save_ms, "ms", "target <= 100 ms"),
        Row("  phase: store.encode", encode_ms, "ms"),
        Row("  ConfigWriter.commit (master path)", commit_ms, "ms", "encode + write in a thread"),
    ]
    print_table(
        f"gnt-instance list: {INSTANCES} instances on {NODES} nodes, fake hypervisor ({note}; "
        f"cluster built in {build_s:.1f} s)",
        rows_list,
    )
    print_table(f"config.data write: {INSTANCES} instances", rows_write)
    print()
    print(figure("list_10k", rows_list[1].median, rows_list[0].median))
    print(figure("config_write_10k", rows_write[1].median, rows_write[0].median))
    return 0


if __name__ == "__main__":
    sys.exit(main())
