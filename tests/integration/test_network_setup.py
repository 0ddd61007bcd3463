"""kvm-ifup / kvm-ifdown against real taps, bridges and routing tables.

Everything happens in network namespaces this test creates (``cx<hex>-…``);
taps are opened by a small holder process inside the namespace, so closing
the holder is exactly "QEMU exited". Needs root.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.errors import HypervisorError
from corral.network.nicenv import ifup_env
from corral.network.runner import run_ifdown, run_ifup
from corral.params import NicParams
from corral.paths import Paths
from corral.rpc.types import NicSpec
from corral.vcluster import net

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
    pytest.mark.timeout(120),
]

BIN = Path(sys.executable).parent
IFUP = str(BIN / "kvm-ifup")
IFDOWN = str(BIN / "kvm-ifdown")
HOLDER = (
    "import sys\n"
    "from corral.network.tap import open_tap\n"
    "t = open_tap(sys.argv[1] or None)\n"
    "print(t.name, flush=True)\n"
    "sys.stdin.read()\n"
)
IFF_UP = 0x1
NIC_UUID = "5f2b0c3e-1111-2222-3333-444455556666"


@dataclass
class Node:
    """A namespace playing one node, with its own Corral root."""

    ns: str
    prefix: str
    root: Path
    holders: list[subprocess.Popen[str]]

    def open_tap(self, name: str = "") -> tuple[str, subprocess.Popen[str]]:
        p = net.popen_in(
            self.ns,
            [sys.executable, "-c", HOLDER, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.holders.append(p)
        assert p.stdout is not None
        tap = p.stdout.readline().strip()
        assert tap, "tap holder failed"
        return tap, p

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CORRAL_ROOT": str(self.root)}
        full.update(env)
        return net.run_in_ns(self.ns, argv, env=full, capture_output=True, text=True, timeout=60)

    def link(self, name: str) -> Any | None:
        with net.ipr(self.ns) as r:
            idx = r.link_lookup(ifname=name)
            return r.get_links(idx[0])[0] if idx else None

    def index(self, name: str) -> int:
        link = self.link(name)
        assert link is not None, f"no link {name}"
        return int(link["index"])

    def sysctl(self, key: str) -> str:
        return net.in_ns(self.ns, lambda: Path(f"/proc/sys/net/{key}").read_text().strip())

    def rules(self, iif: str) -> list[tuple[int, int]]:
        """(family, table) of every rule matching ``iif``."""
        with net.ipr(self.ns) as r:
            return [
                (m["family"], int(m.get("FRA_TABLE") or m["table"]))
                for fam in (socket.AF_INET, socket.AF_INET6)
                for m in r.get_rules(family=fam)
                if m.get("FRA_IIFNAME") == iif
            ]

    def routes(self, table: int, family: int = socket.AF_INET) -> list[tuple[str, int, int]]:
        """(dst/len, oif, proto) in ``table``."""
        with net.ipr(self.ns) as r:
            return [
                (f"{m.get('RTA_DST')}/{m['dst_len']}", m.get("RTA_OIF"), m["proto"])
                for m in r.get_routes(family=family, table=table)
                if m.get("RTA_DST")
            ]

    def add_bridge(self, name: str, *, mtu: int = 1500, vlan_filtering: bool = False) -> None:
        with net.ipr(self.ns) as r:
            spec: dict[str, Any] = {"ifname": name, "kind": "bridge"}
            if vlan_filtering:
                spec["br_vlan_filtering"] = 1
            r.link("add", **spec)
            r.link("set", index=r.link_lookup(ifname=name)[0], mtu=mtu, state="up")

    def add_uplink(self, bridge: str) -> str:
        """A veth port on ``bridge`` (its peer stays in this namespace)."""
        up, peer = f"{self.prefix}up", f"{self.prefix}pe"
        with net.ipr(self.ns) as r:
            r.link("add", ifname=up, kind="veth", peer=peer)
            r.link(
                "set",
                index=r.link_lookup(ifname=up)[0],
                master=r.link_lookup(ifname=bridge)[0],
                state="up",
            )
        return up


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


def _env(tap: str, mode: str, link: str, **extra: str) -> dict[str, str]:
    env = {"INTERFACE": tap, "MODE": mode, "INSTANCE": "inst1", "MAC": "aa:00:00:00:00:01"}
    if link:
        env["LINK"] = link
    if mode == "bridged" and link:
        env["BRIDGE"] = link
    env.update(extra)
    return env


def _assert_untouched(node: Node, tap: str) -> None:
    link = node.link(tap)
    assert link is not None
    assert not link.get("IFLA_MASTER"), "tap left in a bridge"
    assert not link["flags"] & IFF_UP, "tap left up"
    assert node.rules(tap) == []


# --- taps -------------------------------------------------------------------------


def test_tap_lives_exactly_as_long_as_its_fd(node: Node) -> None:
    tap, holder = node.open_tap(f"{node.prefix}t0")
    link = node.link(tap)
    assert link is not None
    assert link.get("IFLA_LINKINFO").get("IFLA_INFO_KIND") == "tun"
    assert holder.stdin is not None
    holder.stdin.close()  # "QEMU exits"
    holder.wait(timeout=10)
    assert node.link(tap) is None


def test_kernel_chooses_a_name_when_none_is_given(node: Node) -> None:
    tap, _ = node.open_tap()
    assert tap.startswith("tap")
    assert node.link(tap) is not None


# --- bridged ----------------------------------------------------------------------


def test_bridged_up_enslaves_with_bridge_mtu_and_keeps_bridge_mac(node: Node) -> None:
    br = f"{node.prefix}br"
    node.add_bridge(br, mtu=1400)
    node.add_uplink(br)
    bridge_mac = node.link(br).get("IFLA_ADDRESS")  # type: ignore[union-attr]
    tap, holder = node.open_tap()

    r = node.run([IFUP, tap], _env(tap, "bridged", br))
    assert r.returncode == 0, r.stderr

    link = node.link(tap)
    assert link is not None
    assert link.get("IFLA_MASTER") == node.index(br)
    assert link["flags"] & IFF_UP
    assert link.get("IFLA_MTU") == 1400
    assert link.get("IFLA_ADDRESS").startswith("fe:")
    assert node.link(br).get("IFLA_ADDRESS") == bridge_mac  # type: ignore[union-attr]

    # ifdown takes the live tap off the bridge; once QEMU exits it is a no-op.
    r = node.run([IFDOWN, tap, "shutdown"], _env(tap, "bridged", br))
    assert r.returncode == 0, r.stderr
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    assert node.link(tap) is None
    assert node.run([IFDOWN, tap, "shutdown"], _env(tap, "bridged", br)).returncode == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [("none", "does not exist"), ("veth", "is not a bridge")],
)
def test_bridged_without_a_bridge_fails_and_leaves_tap_alone(
    node: Node, make: str, message: str
) -> None:
    link = f"{node.prefix}br"
    if make == "veth":
        with net.ipr(node.ns) as r:
            r.link("add", ifname=link, kind="veth", peer=f"{node.prefix}pe")
    tap, _ = node.open_tap()
    r = node.run([IFUP, tap], _env(tap, "bridged", link))
    assert r.returncode == 1
    assert message in r.stderr and link in r.stderr
    _assert_untouched(node, tap)


def test_vlan_on_a_bridge_without_vlan_filtering_is_refused(node: Node) -> None:
    br = f"{node.prefix}br"
    node.add_bridge(br)
    tap, _ = node.open_tap()
    r = node.run([IFUP, tap], _env(tap, "bridged", br, VLAN=".10"))
    assert r.returncode == 1
    assert "VLAN filtering disabled" in r.stderr
    _assert_untouched(node, tap)


def _vlan_bridge_or_skip(node: Node, name: str) -> None:
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    try:
        node.add_bridge(name, vlan_filtering=True)
    except NetlinkError as e:
        if e.code == errno.EOPNOTSUPP:
            pytest.skip("kernel without CONFIG_BRIDGE_VLAN_FILTERING")
        raise


def _port_vlans(node: Node, port: str) -> dict[int, set[str]]:
    flags = {0x2: "pvid", 0x4: "untagged"}
    out: dict[int, set[str]] = {}
    with net.ipr(node.ns) as r:
        for m in r.get_vlans(index=node.index(port)):
            spec = m.get("IFLA_AF_SPEC")
            for info in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO") if spec is not None else []:
                out[info["vid"]] = {n for bit, n in flags.items() if info["flags"] & bit}
    return out


@pytest.mark.parametrize(
    ("vlan", "expected"),
    [
        (".10", {10: {"pvid", "untagged"}}),
        (":20:30", {20: set(), 30: set()}),
        (".10:20:30", {10: {"pvid", "untagged"}, 20: set(), 30: set()}),
    ],
)
def test_vlans_on_a_vlan_filtering_bridge(
    node: Node, vlan: str, expected: dict[int, set[str]]
) -> None:
    br = f"{node.prefix}br"
    _vlan_bridge_or_skip(node, br)
    uplink = node.add_uplink(br)
    tap, _ = node.open_tap()
    r = node.run([IFUP, tap], _env(tap, "bridged", br, VLAN=vlan))
    assert r.returncode == 0, r.stderr
    assert _port_vlans(node, tap) == expected  # default VLAN 1 is gone
    uplink_vlans = _port_vlans(node, uplink)
    assert uplink_vlans[1] == {"pvid", "untagged"}  # the uplink's native VLAN is kept
    assert set(expected) <= set(uplink_vlans)


# --- routed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "table", "family"),
    [("198.51.100.10", 100, socket.AF_INET), ("2001:db8::10", 1000, socket.AF_INET6)],
)
def test_routed_up_and_down(node: Node, ip: str, table: int, family: int) -> None:
    tap, _ = node.open_tap()
    env = _env(tap, "routed", str(table), IP=ip)
    plen = 32 if family == socket.AF_INET else 128

    for _ in range(2):  # a second ifup changes nothing (no duplicate rule)
        r = node.run([IFUP, tap], env)
        assert r.returncode == 0, r.stderr
        assert node.rules(tap) == [(family, table)]
        assert node.routes(table, family) == [(f"{ip}/{plen}", node.index(tap), 4)]  # static
    assert node.sysctl(f"ipv4/conf/{tap}/proxy_arp") == "1"
    assert node.sysctl(f"ipv4/conf/{tap}/forwarding") == "1"
    if family == socket.AF_INET6:
        assert node.sysctl(f"ipv6/conf/{tap}/proxy_ndp") == "1"
    assert node.link(tap)["flags"] & IFF_UP  # type: ignore[index]

    r = node.run([IFDOWN, tap, "shutdown"], env)
    assert r.returncode == 0, r.stderr
    assert node.rules(tap) == []
    assert node.routes(table, family) == []
    assert node.run([IFDOWN, tap, "shutdown"], env).returncode == 0  # idempotent


def test_routed_ifup_replaces_a_stale_rule_from_a_previous_owner(node: Node) -> None:
    tap, _ = node.open_tap()
    r = node.run([IFUP, tap], _env(tap, "routed", "200", IP="198.51.100.20"))
    assert r.returncode == 0, r.stderr
    # ifdown never ran (node crash); the tap name now serves another NIC
    r = node.run([IFUP, tap], _env(tap, "routed", "100", IP="198.51.100.10"))
    assert r.returncode == 0, r.stderr
    assert node.rules(tap) == [(socket.AF_INET, 100)]


def test_routed_ifdown_after_the_tap_is_gone_removes_the_rule(node: Node) -> None:
    tap, holder = node.open_tap()
    env = _env(tap, "routed", "100", IP="198.51.100.10")
    assert node.run([IFUP, tap], env).returncode == 0
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    assert node.routes(100) == []  # the kernel flushed the route with the tap
    assert node.rules(tap) == [(socket.AF_INET, 100)]  # but not the rule
    r = node.run([IFDOWN, tap, "migrate-success"], env)
    assert r.returncode == 0, r.stderr
    assert node.rules(tap) == []


@pytest.mark.parametrize(
    ("link", "ip", "message"),
    [
        ("100", "", "IP is mandatory"),
        ("nosuchtable", "198.51.100.10", "Unknown routing table 'nosuchtable'"),
        ("100", "198.51.100.300", "invalid IP"),
    ],
)
def test_routed_errors_leave_nothing_behind(node: Node, link: str, ip: str, message: str) -> None:
    tap, _ = node.open_tap()
    extra = {"IP": ip} if ip else {}
    r = node.run([IFUP, tap], _env(tap, "routed", link, **extra))
    assert r.returncode == 1
    assert message in r.stderr
    _assert_untouched(node, tap)
    assert node.routes(100) == []


@pytest.mark.parametrize(
    ("mode", "extra", "message"),
    [
        ("ovn", {}, "has no INTERFACE_UUID"),
        (
            "ovn",
            {"INTERFACE_UUID": "0b7c6a52-1b0e-4c53-9d8b-5a1f3c6e2d10"},
            "Cannot connect to OVSDB",
        ),
        ("openvswitch", {}, "Cannot connect to OVSDB"),
    ],
)
def test_ovs_modes_without_ovs_fail_clearly(
    node: Node, mode: str, extra: dict[str, str], message: str
) -> None:
    """No ovsdb-server on this node: a clear error naming what is missing, tap untouched."""
    tap, _ = node.open_tap()
    r = node.run([IFUP, tap], _env(tap, mode, "br0" if mode == "openvswitch" else "", **extra))
    assert r.returncode == 1
    assert message in r.stderr, r.stderr
    _assert_untouched(node, tap)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox ping")
def test_routed_traffic_through_proxy_arp(node: Node) -> None:
    """guest --veth(as the tap)-- node --veth-- outside: ping both ways."""
    p = node.prefix
    guest, outside = f"{p}-g", f"{p}-o"
    net.create_ns(guest)
    net.create_ns(outside)
    try:
        tap, uplink = f"{p}tap", f"{p}up"
        net.add_veth(node.ns, tap, guest, "eth0")
        net.add_veth(node.ns, uplink, outside, "eth0")
        net.link_up(guest, "eth0")
        net.link_up(outside, "eth0")
        net.link_up(node.ns, uplink)
        net.add_address(node.ns, uplink, "203.0.113.2", 24)
        net.add_address(outside, "eth0", "203.0.113.1", 24)
        net.add_address(guest, "eth0", "198.51.100.10", 32)
        with net.ipr(guest) as r:
            r.route("add", dst="0.0.0.0/0", oif=r.link_lookup(ifname="eth0")[0], scope=253)
        with net.ipr(outside) as r:
            r.route("add", dst="198.51.100.0/24", gateway="203.0.113.2")
        with net.ipr(node.ns) as r:  # the admin's part: traffic to guests uses table 100
            r.rule("add", dst="198.51.100.0", dst_len=24, table=100, priority=31000)
        net.set_sysctls(node.ns, {f"net/ipv4/conf/{uplink}/forwarding": "1"})

        r = node.run([IFUP, tap], _env(tap, "routed", "100", IP="198.51.100.10"))
        assert r.returncode == 0, r.stderr

        def ping(ns: str, dst: str) -> bool:
            argv = ["busybox", "ping", "-c", "1", "-W", "2", dst]
            return net.run_in_ns(ns, argv, capture_output=True, timeout=30).returncode == 0

        assert ping(outside, "198.51.100.10")
        assert ping(guest, "203.0.113.1")  # the node answers ARP for it (proxy ARP)

        r = node.run([IFDOWN, tap, "shutdown"], _env(tap, "routed", "100", IP="198.51.100.10"))
        assert r.returncode == 0, r.stderr
        assert not ping(outside, "198.51.100.10")
    finally:
        net.remove_ns(guest)
        net.remove_ns(outside)


# --- scripts: environment checks and custom scripts -------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [({"MODE": "bridged"}, "INTERFACE is not set"), ({"INTERFACE": "tapx"}, "MODE not")],
)
def test_missing_interface_or_mode(node: Node, env: dict[str, str], message: str) -> None:
    r = node.run([IFUP, "tapx"], env)
    assert r.returncode == 1
    assert message in r.stderr


def test_bad_ifdown_context(node: Node) -> None:
    r = node.run([IFDOWN, "tapx", "reboot"], _env("tapx", "bridged", "br0"))
    assert r.returncode == 1
    assert "unknown context 'reboot'" in r.stderr


def _write_script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("name", ["kvm-ifup-custom", "kvm-vif-bridge"])
def test_custom_ifup_sees_ganeti_env_and_replaces_builtin(node: Node, name: str) -> None:
    br = f"{node.prefix}br"
    node.add_bridge(br)
    tap, _ = node.open_tap()
    dump = node.root / "env.txt"
    _write_script(Paths(node.root).conf_dir / name, f'echo "$@" > {dump}.argv\nenv > {dump}\n')
    nic = NicSpec(
        uuid=NIC_UUID,
        name="web",
        index=2,
        mac="aa:00:00:11:22:33",
        ip="198.51.100.10",
        nicparams=NicParams(mode="bridged", link=br, vlan=".10"),
        network={"NETWORK_NAME": "net1", "NETWORK_SUBNET": "198.51.100.0/24"},
    )
    env = ifup_env("inst1", ["tag1", "tag2"], nic, tap)

    r = node.run([IFUP, tap], env)
    assert r.returncode == 0, r.stderr

    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    for key, value in env.items():
        assert seen.get(key) == value, key
    assert seen["TAGS"] == "tag1 tag2"
    assert seen["INTERFACE_INDEX"] == "2"
    assert seen["BRIDGE"] == br
    assert seen["NETWORK_SUBNET"] == "198.51.100.0/24"
    assert Path(f"{dump}.argv").read_text().split() == [tap]
    # the built-in setup did not run (it would have failed on the VLAN, too)
    _assert_untouched(node, tap)


def test_custom_ifup_can_chain_to_the_builtin(node: Node) -> None:
    br = f"{node.prefix}br"
    node.add_bridge(br)
    tap, _ = node.open_tap()
    marker = node.root / "ran"
    _write_script(
        Paths(node.root).conf_dir / "kvm-ifup-custom",
        f'touch {marker}\nexec {IFUP} --no-custom "$@"\n',
    )
    r = node.run([IFUP, tap], _env(tap, "bridged", br))
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    assert node.link(tap).get("IFLA_MASTER") == node.index(br)  # type: ignore[union-attr]


def test_custom_ifdown_gets_the_context(node: Node) -> None:
    out = node.root / "down.txt"
    _write_script(
        Paths(node.root).conf_dir / "kvm-ifdown-custom", f'echo "$@ $MODE" > {out}\nexit 3\n'
    )
    r = node.run([IFDOWN, "tap9", "hot-remove"], _env("tap9", "routed", "100", IP="198.51.100.9"))
    assert r.returncode == 3  # the custom script's status is the result
    assert out.read_text().split() == ["tap9", "hot-remove", "routed"]


# --- runner (noded side): runs in the host namespace, so only custom scripts ------


def test_runner_reports_failures_with_the_script_output(tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = Paths(root).conf_dir
    conf.mkdir(parents=True)
    _write_script(conf / "kvm-ifup-custom", 'echo "no such switch port for $INTERFACE"\nexit 2\n')
    _write_script(conf / "kvm-ifdown-custom", 'echo "cleanup failed"\nexit 4\n')
    env = {
        "INTERFACE": "tap42",
        "MODE": "bridged",
        "PATH": "/usr/bin:/bin",
        "CORRAL_ROOT": str(root),
    }

    with pytest.raises(HypervisorError) as err:
        asyncio.run(run_ifup(None, env, "tap42"))
    assert "Failed to configure interface tap42" in str(err.value)
    assert "no such switch port for tap42" in str(err.value)

    result = asyncio.run(run_ifdown(BIN, env, "tap42", "shutdown"))
    assert not result.ok
    assert result.exit_code == 4
    assert "cleanup failed" in result.output


def test_runner_success_and_timeout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = Paths(root).conf_dir
    conf.mkdir(parents=True)
    _write_script(conf / "kvm-ifup-custom", "exit 0\n")
    _write_script(conf / "kvm-ifdown-custom", "sleep 30\n")
    env = {
        "INTERFACE": "tap42",
        "MODE": "bridged",
        "PATH": "/usr/bin:/bin",
        "CORRAL_ROOT": str(root),
    }
    asyncio.run(run_ifup(IFUP, env, "tap42"))
    result = asyncio.run(run_ifdown(None, env, "tap42", "shutdown", timeout=0.5))
    assert result.exit_code is None
    assert "killed" in result.output


def test_bridge_exists(node: Node) -> None:
    from corral.network.setup import bridge_exists

    br = f"{node.prefix}br"
    node.add_bridge(br)
    node.add_uplink(br)
    assert net.in_ns(node.ns, lambda: bridge_exists(br))
    assert not net.in_ns(node.ns, lambda: bridge_exists(f"{node.prefix}up"))  # a veth
    assert not net.in_ns(node.ns, lambda: bridge_exists(f"{node.prefix}zz"))
