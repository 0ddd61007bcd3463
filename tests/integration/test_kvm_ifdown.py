"""The kvm-ifdown contract: who runs it with what, and what the built-in undoes.

* ``launch.deconfigure`` (after shutdown; migration and hot-remove use the same
  runner) runs ``kvm-ifdown <tap> <context>`` once per NIC of the *runtime
  file*, the tap read from the NIC's UUID file, with kvm-ifup's environment
  minus ``TAGS``; an admin's ``kvm-ifdown-custom`` gets exactly that, and its
  failure is logged, never raised.
* The built-in script undoes kvm-ifup on a tap that still exists (a NIC
  re-linked while running): routed — route, rule, proxy ARP/NDP and
  forwarding; bridged — the bridge port. A tap another NIC's record names
  (the kernel reuses ``tapN``) or that sits on another bridge is left alone.

Network tests run in namespaces this test creates (``cx<hex>-n``); taps are
held by a small process inside, like QEMU holds them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.hypervisor.kvm import launch, runtime
from corral.hypervisor.kvm.files import KvmFiles
from corral.network import nicfiles
from corral.network.nicenv import IFDOWN_CONTEXTS, ifdown_env, ifup_env
from corral.network.runner import run_ifdown
from corral.params import NicParams
from corral.paths import Paths
from corral.rpc.types import NicSpec
from corral.vcluster import net

BIN = Path(sys.executable).parent
IFUP = str(BIN / "kvm-ifup")
IFDOWN = str(BIN / "kvm-ifdown")
IFF_UP = 0x1
UUIDS = (
    "5f2b0c3e-0000-4000-8000-000000000001",
    "5f2b0c3e-0000-4000-8000-000000000002",
    "5f2b0c3e-0000-4000-8000-000000000003",
)
DUMP_SCRIPT = '#!/bin/sh\n{{ echo "ARGV=$*"; env; echo "--"; }} >> {dump}\n'

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def _write_script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)


def _dumps(path: Path) -> list[dict[str, str]]:
    """One dict per script run (``ARGV`` plus the environment)."""
    runs: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line == "--":
            runs.append(cur)
            cur = {}
        elif "=" in line:
            k, v = line.split("=", 1)
            cur[k] = v
    return runs


# --- who runs kvm-ifdown with what (custom script; no network needed) ----------------


def _instance(root: Path) -> KvmFiles:
    """inst1 as a node records it: 3 NICs in the runtime file, taps for two of them."""
    files = KvmFiles(Paths(root))
    files.ensure()
    nics = [
        runtime.RuntimeNic(
            mac="aa:00:00:7e:00:01", uuid=UUIDS[0], nicparams={"mode": "bridged", "link": "br7"}
        ),
        runtime.RuntimeNic(
            mac="aa:00:00:7e:00:02",
            uuid=UUIDS[1],
            ip="198.51.100.72",
            name="back",
            nicparams={"mode": "routed", "link": "100"},
            netinfo={"NETWORK_NAME": "net7"},
        ),
        # plugged but never wired (no tap file): nothing to undo
        runtime.RuntimeNic(mac="aa:00:00:7e:00:03", uuid=UUIDS[2], nicparams={"mode": "bridged"}),
    ]
    runtime.save(files.runtime("inst1"), runtime.KvmRuntime(["kvm"], nics, {}, []))
    # Recorded in another order than the runtime file: the tap comes by UUID.
    nicfiles.write_tap(files.nic_dir, "inst1", UUIDS[1], 0, "cxt1")
    nicfiles.write_tap(files.nic_dir, "inst1", UUIDS[0], 1, "cxt0")
    return files


@pytest.mark.parametrize(
    ("context", "passed"),
    [(c, c) for c in IFDOWN_CONTEXTS] + [("migrate-success", "migrate-source")],
)
def test_custom_ifdown_gets_tap_context_and_the_runtime_nic_without_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: str, passed: str
) -> None:
    monkeypatch.setenv("CORRAL_ROOT", str(tmp_path))
    files = _instance(tmp_path)
    dump = tmp_path / "dump"
    _write_script(Paths(tmp_path).conf_dir / "kvm-ifdown-custom", DUMP_SCRIPT.format(dump=dump))

    rt = runtime.load(files.runtime("inst1"))
    done = asyncio.run(launch.deconfigure(rt, files, "inst1", context))

    assert [(u.tap, u.result.ok) for u in done] == [("cxt0", True), ("cxt1", True)]
    bridged, routed = _dumps(dump)
    assert bridged["ARGV"] == f"cxt0 {passed}"
    assert routed["ARGV"] == f"cxt1 {passed}"
    for run in (bridged, routed):
        assert "TAGS" not in run
        assert run["INSTANCE"] == "inst1"
        assert run["CORRAL_ROOT"] == str(tmp_path)
    assert (bridged["INTERFACE"], bridged["INTERFACE_UUID"], bridged["INTERFACE_INDEX"]) == (
        "cxt0",
        UUIDS[0],
        "0",
    )
    assert (bridged["MODE"], bridged["LINK"], bridged["BRIDGE"]) == ("bridged", "br7", "br7")
    assert (routed["INTERFACE"], routed["INTERFACE_UUID"], routed["INTERFACE_INDEX"]) == (
        "cxt1",
        UUIDS[1],
        "1",
    )
    assert (routed["MODE"], routed["LINK"], routed["IP"]) == ("routed", "100", "198.51.100.72")
    assert routed["INTERFACE_NAME"] == "back" and routed["NETWORK_NAME"] == "net7"
    assert "BRIDGE" not in routed


def test_a_failing_ifdown_is_logged_and_never_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CORRAL_ROOT", str(tmp_path))
    files = _instance(tmp_path)
    _write_script(
        Paths(tmp_path).conf_dir / "kvm-ifdown-custom",
        '#!/bin/sh\necho "switch port of $1 is busy"\nexit 3\n',
    )
    with caplog.at_level(logging.WARNING, logger="corral.network.runner"):
        done = asyncio.run(
            launch.deconfigure(runtime.load(files.runtime("inst1")), files, "inst1", "shutdown")
        )
    assert [u.result.exit_code for u in done] == [3, 3]  # both NICs tried
    assert "Failed to deconfigure interface cxt0 (shutdown)" in caplog.text
    assert "switch port of cxt1 is busy" in caplog.text


# --- what the built-in kvm-ifdown undoes (namespaces) -------------------------------

HOLDER = (
    "import sys\n"
    "from corral.network.tap import open_tap\n"
    "t = open_tap()\n"
    "print(t.name, flush=True)\n"
    "sys.stdin.read()\n"
)


@dataclass
class Node:
    ns: str
    prefix: str
    root: Path
    holders: list[subprocess.Popen[str]]

    @property
    def nic_dir(self) -> Path:
        return KvmFiles(Paths(self.root)).nic_dir

    def open_tap(self) -> str:
        p = net.popen_in(
            self.ns,
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.holders.append(p)
        assert p.stdout is not None
        tap = p.stdout.readline().strip()
        assert tap, "tap holder failed"
        return tap

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        full = {**env, "CORRAL_ROOT": str(self.root)}
        return net.run_in_ns(self.ns, argv, env=full, capture_output=True, text=True, timeout=60)

    def link(self, name: str) -> Any:
        with net.ipr(self.ns) as r:
            idx = r.link_lookup(ifname=name)
            return r.get_links(idx[0])[0] if idx else None

    def master(self, tap: str) -> int:
        return int(self.link(tap).get("IFLA_MASTER") or 0)

    def is_up(self, tap: str) -> bool:
        return bool(self.link(tap)["flags"] & IFF_UP)

    def add_bridge(self, name: str) -> int:
        with net.ipr(self.ns) as r:
            r.link("add", ifname=name, kind="bridge")
            idx = r.link_lookup(ifname=name)[0]
            r.link("set", index=idx, state="up")
            return int(idx)

    def rules(self, iif: str) -> list[int]:
        with net.ipr(self.ns) as r:
            return [
                int(m.get("FRA_TABLE") or m["table"])
                for fam in (socket.AF_INET, socket.AF_INET6)
                for m in r.get_rules(family=fam)
                if m.get("FRA_IIFNAME") == iif
            ]

    def routes(self, table: int, family: int) -> list[str]:
        with net.ipr(self.ns) as r:
            return [
                f"{m.get('RTA_DST')}/{m['dst_len']}"
                for m in r.get_routes(family=family, table=table)
                if m.get("RTA_DST")
            ]

    def sysctl(self, key: str) -> str:
        return net.in_ns(self.ns, lambda: Path(f"/proc/sys/net/{key}").read_text().strip())


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    prefix = "cx" + secrets.token_hex(2)
    ns = f"{prefix}-n"
    net.create_ns(ns)
    n = Node(ns=ns, prefix=prefix, root=tmp_path / "root", holders=[])
    Paths(n.root).conf_dir.mkdir(parents=True)
    try:
        yield n
    finally:
        for p in n.holders:
            if p.poll() is None:
                p.kill()
                p.wait()
        net.remove_ns(ns)


def _nic(mode: str, link: str, ip: str | None = None, uuid: str = UUIDS[0]) -> NicSpec:
    return NicSpec(
        uuid=uuid,
        index=0,
        mac="aa:00:00:7e:01:01",
        ip=ip,
        nicparams=NicParams(mode=mode, link=link),
    )


@needs_root
@pytest.mark.parametrize(
    ("ip", "link", "table"),
    [("198.51.100.73", "100", 100), ("2001:db8::73", "100", 100), ("2001:db8::74", "main", 254)],
)
def test_routed_ifdown_removes_route_rule_and_proxy_arp_of_a_live_tap(
    node: Node, ip: str, link: str, table: int
) -> None:
    v6 = ":" in ip
    family, dst = (socket.AF_INET6, f"{ip}/128") if v6 else (socket.AF_INET, f"{ip}/32")
    tap = node.open_tap()
    nic = _nic("routed", link, ip)
    nicfiles.write_tap(node.nic_dir, "inst1", nic.uuid, 0, tap)  # our own record
    if table == 254:  # as on most hosts: the up tap gets a link-local address and route
        net.set_sysctls(node.ns, {f"net/ipv6/conf/{tap}/addr_gen_mode": "0"})
    r = node.run([IFUP, tap], ifup_env("inst1", ["web"], nic, tap))
    assert r.returncode == 0, r.stderr
    if table == 254:
        assert "fe80::/64" in node.routes(table, family)
    keys = ["ipv4/conf/{}/proxy_arp", "ipv4/conf/{}/forwarding"]
    if v6:
        keys += ["ipv6/conf/{}/proxy_ndp", "ipv6/conf/{}/forwarding"]
    assert [node.sysctl(k.format(tap)) for k in keys] == ["1"] * len(keys)
    assert node.rules(tap) == [table] and dst in node.routes(table, family)

    r = node.run([IFDOWN, tap, "hot-remove"], ifdown_env("inst1", nic, tap))
    assert r.returncode == 0, r.stderr
    assert node.rules(tap) == []
    assert dst not in node.routes(table, family)
    assert [node.sysctl(k.format(tap)) for k in keys] == ["0"] * len(keys)
    assert node.link(tap) is not None  # the tap itself is QEMU's


@needs_root
@pytest.mark.parametrize("via", ["script", "noded"])
def test_bridged_ifdown_takes_a_live_tap_off_its_bridge(node: Node, via: str) -> None:
    br = f"{node.prefix}br"
    node.add_bridge(br)
    tap = node.open_tap()
    nic = _nic("bridged", br)
    nicfiles.write_tap(node.nic_dir, "inst1", nic.uuid, 0, tap)
    r = node.run([IFUP, tap], ifup_env("inst1", [], nic, tap))
    assert r.returncode == 0, r.stderr
    assert node.master(tap) == node.link(br)["index"] and node.is_up(tap)

    env = {**ifdown_env("inst1", nic, tap), "CORRAL_ROOT": str(node.root)}
    if via == "script":
        r = node.run([IFDOWN, tap, "hot-remove"], env)
        assert r.returncode == 0, r.stderr
    else:  # what noded does without custom scripts: the same code, in-process
        result = net.in_ns(node.ns, lambda: asyncio.run(run_ifdown(None, env, tap, "hot-remove")))
        assert result.ok
    assert node.master(tap) == 0
    assert not node.is_up(tap)


@needs_root
def test_ifdown_leaves_a_tap_that_another_nic_now_owns(node: Node) -> None:
    br = f"{node.prefix}br"
    node.add_bridge(br)
    b_tap, r_tap = node.open_tap(), node.open_tap()
    # The kernel gave the names to inst2's NICs, which wired them...
    for tap, nic in (
        (b_tap, _nic("bridged", br, uuid=UUIDS[1])),
        (r_tap, _nic("routed", "100", "198.51.100.74", uuid=UUIDS[2])),
    ):
        nicfiles.write_tap(node.nic_dir, "inst2", nic.uuid, 0, tap)
        r = node.run([IFUP, tap], ifup_env("inst2", [], nic, tap))
        assert r.returncode == 0, r.stderr
    # ...and now a late kvm-ifdown of inst1's NICs that had the same tap names runs.
    for tap, nic in (
        (b_tap, _nic("bridged", br)),
        (r_tap, _nic("routed", "100", "198.51.100.74")),
    ):
        r = node.run([IFDOWN, tap, "shutdown"], ifdown_env("inst1", nic, tap))
        assert r.returncode == 0, r.stderr
    assert node.master(b_tap) == node.link(br)["index"] and node.is_up(b_tap)
    assert node.rules(r_tap) == [100]
    assert node.routes(100, socket.AF_INET) == ["198.51.100.74/32"]
    assert node.sysctl(f"ipv4/conf/{r_tap}/proxy_arp") == "1"


@needs_root
def test_bridged_ifdown_leaves_a_tap_on_another_bridge(node: Node) -> None:
    old, new = f"{node.prefix}b1", f"{node.prefix}b2"
    node.add_bridge(old)
    new_idx = node.add_bridge(new)
    tap = node.open_tap()
    r = node.run([IFUP, tap], ifup_env("inst1", [], _nic("bridged", new), tap))
    assert r.returncode == 0, r.stderr
    r = node.run([IFDOWN, tap, "hot-remove"], ifdown_env("inst1", _nic("bridged", old), tap))
    assert r.returncode == 0, r.stderr
    assert node.master(tap) == new_idx and node.is_up(tap)
