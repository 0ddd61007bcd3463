"""Bridged NICs without VLAN, wired by the standard library alone (brioctl).

Real taps and bridges in a network namespace this test creates
(``cx<hex>-b``). Taps are persistent (``tuntap``), so no process has to hold
them; they vanish with the namespace. Needs root.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.errors import HypervisorError
from corral.network import brioctl
from corral.network.ifup import conf_dir
from corral.network.nicenv import NicEnv
from corral.network.setup import nic_up
from corral.paths import Paths
from corral.vcluster import net

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
    pytest.mark.timeout(120),
]

BIN = Path(sys.executable).parent
IFF_UP = 0x1
TAP_MAC = "02:11:22:33:44:55"


@dataclass
class Link:
    """What ``ip link show`` says, as the tests compare it."""

    master: int
    up: bool
    mtu: int
    mac: str


@dataclass
class Ns:
    name: str
    prefix: str
    root: Path

    def bridge(self, suffix: str, mtu: int = 1500) -> str:
        name = f"{self.prefix}{suffix}"
        with net.ipr(self.name) as r:
            r.link("add", ifname=name, kind="bridge")
            r.link("set", index=r.link_lookup(ifname=name)[0], mtu=mtu, state="up")
        return name

    def tap(self, suffix: str = "t0") -> str:
        name = f"{self.prefix}{suffix}"
        with net.ipr(self.name) as r:
            r.link("add", ifname=name, kind="tuntap", mode="tap")
            r.link("set", index=r.link_lookup(ifname=name)[0], address=TAP_MAC)
        return name

    def link(self, name: str) -> Link:
        with net.ipr(self.name) as r:
            m: Any = r.get_links(r.link_lookup(ifname=name)[0])[0]
            return Link(
                master=int(m.get("IFLA_MASTER") or 0),
                up=bool(m["flags"] & IFF_UP),
                mtu=int(m.get("IFLA_MTU")),
                mac=str(m.get("IFLA_ADDRESS")),
            )

    def index(self, name: str) -> int:
        index: int = net.in_ns(self.name, lambda: socket.if_nametoindex(name))
        return index

    def ports(self, bridge: str) -> list[str]:
        with net.ipr(self.name) as r:
            br = r.link_lookup(ifname=bridge)[0]
            return [m.get("IFLA_IFNAME") for m in r.get_links() if m.get("IFLA_MASTER") == br]

    def enslave(self, tap: str, bridge: str) -> None:
        net.in_ns(self.name, lambda: brioctl.enslave(tap, bridge))

    def run(self, argv: list[str], tap: str, link: str, mode: str = "bridged", **extra: str) -> Any:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CORRAL_ROOT": str(self.root),
            "INSTANCE": "inst1",
            "MAC": "aa:00:00:00:00:01",
            "MODE": mode,
            "INTERFACE": tap,
            "INTERFACE_INDEX": "0",
            "LINK": link,
            **extra,
        }
        if mode == "bridged":
            env["BRIDGE"] = link
        return net.run_in_ns(self.name, argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Ns]:
    prefix = "cx" + secrets.token_hex(2)
    name = f"{prefix}-b"
    net.create_ns(name)
    n = Ns(name=name, prefix=prefix, root=tmp_path / "root")
    Paths(n.root).conf_dir.mkdir(parents=True)
    try:
        yield n
    finally:
        net.remove_ns(name)


# --- what a wired tap looks like --------------------------------------------------


@pytest.mark.parametrize("mtu", [1400, 9000])
def test_tap_gets_fe_mac_bridge_mtu_and_is_an_up_port(ns: Ns, mtu: int) -> None:
    br = ns.bridge("br", mtu=mtu)
    tap = ns.tap()

    ns.enslave(tap, br)

    assert ns.link(tap) == Link(master=ns.index(br), up=True, mtu=mtu, mac="fe" + TAP_MAC[2:])
    assert ns.link(br).mtu == mtu
    ns.enslave(tap, br)  # a second run changes nothing
    assert ns.link(tap) == Link(master=ns.index(br), up=True, mtu=mtu, mac="fe" + TAP_MAC[2:])
    assert ns.ports(br) == [tap]


def test_nic_up_uses_it_for_bridged_without_vlan(ns: Ns) -> None:
    br = ns.bridge("br", mtu=1400)
    tap = ns.tap()
    nic = NicEnv(interface=tap, mode="bridged", link=br)
    result = net.in_ns(ns.name, lambda: nic_up(nic))
    assert result.warnings == []
    assert ns.link(tap) == Link(master=ns.index(br), up=True, mtu=1400, mac="fe" + TAP_MAC[2:])


def test_relink_moves_the_tap_and_leaves_the_old_bridge_alone(ns: Ns) -> None:
    # NIC modify re-runs kvm-ifup on the same tap with the new LINK.
    a, b = ns.bridge("ba", mtu=9000), ns.bridge("bb", mtu=1400)
    tap = ns.tap()
    ifup = str(BIN / "kvm-ifup")
    r = ns.run([ifup, tap], tap, a)
    assert r.returncode == 0, r.stderr
    assert ns.link(tap).master == ns.index(a)

    r = ns.run([ifup, tap], tap, b)
    assert r.returncode == 0, r.stderr
    assert ns.link(tap) == Link(master=ns.index(b), up=True, mtu=1400, mac="fe" + TAP_MAC[2:])
    assert ns.ports(a) == []
    assert ns.ports(b) == [tap]


# --- refusals and failures --------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("none", "Bridge {link} does not exist on this node"),
        ("veth", "Link {link} is not a bridge (it is a veth device)"),
        ("tap", "Link {link} is not a bridge (it is a tun device)"),
    ],
)
def test_a_link_that_is_no_bridge_leaves_the_tap_untouched(ns: Ns, make: str, message: str) -> None:
    old = ns.bridge("ba", mtu=9000)
    tap = ns.tap()
    ns.enslave(tap, old)  # wired to another bridge: must stay exactly so
    before = ns.link(tap)
    link = f"{ns.prefix}zz"
    if make == "veth":
        with net.ipr(ns.name) as r:
            r.link("add", ifname=link, kind="veth", peer=f"{ns.prefix}pe")
    elif make == "tap":
        ns.tap("zz")

    with pytest.raises(HypervisorError) as err:
        ns.enslave(tap, link)
    assert str(err.value) == message.format(link=link)
    assert ns.link(tap) == before

    r = ns.run([str(BIN / "kvm-ifup"), tap], tap, link)  # the same through the script
    assert r.returncode == 1
    assert r.stderr == f"kvm-ifup: {message.format(link=link)}\n"
    assert ns.link(tap) == before


def test_a_missing_tap_is_named(ns: Ns) -> None:
    br = ns.bridge("br")
    with pytest.raises(HypervisorError, match=f"Interface {ns.prefix}t9 does not exist"):
        ns.enslave(f"{ns.prefix}t9", br)
    assert ns.ports(br) == []


def test_a_failure_after_the_checks_leaves_the_tap_on_no_bridge_and_down(ns: Ns) -> None:
    old = ns.bridge("ba")
    # Bridges take MTUs up to 65535, taps only up to 65521: setting the MTU fails.
    big = ns.bridge("bb", mtu=65535)
    tap = ns.tap()
    ns.enslave(tap, old)
    assert ns.link(tap).up

    with pytest.raises(HypervisorError, match=f"Cannot set MAC/MTU of {tap}: "):
        ns.enslave(tap, big)
    after = ns.link(tap)
    assert (after.master, after.up) == (0, False)
    assert ns.ports(old) == [] and ns.ports(big) == []


# --- reading links ----------------------------------------------------------------


def test_link_info_reads_this_namespace_not_sysfs(ns: Ns) -> None:
    br = ns.bridge("br", mtu=1400)
    tap = ns.tap()
    ns.enslave(tap, br)

    def read() -> tuple[Any, ...]:
        return (brioctl.link_info(br), brioctl.link_info(tap), brioctl.link_info(ns.prefix))

    bridge, port, missing = net.in_ns(ns.name, read)
    assert bridge is not None and port is not None and missing is None
    assert (bridge.kind, bridge.mtu, bridge.master) == ("bridge", 1400, 0)
    assert (port.kind, port.master, port.address.hex(":")) == (
        "tun",
        bridge.index,
        "fe" + TAP_MAC[2:],
    )
    assert brioctl.link_info(br) is None  # the test's own namespace has no such link
    assert net.in_ns(ns.name, lambda: brioctl.is_bridge(br))
    assert not net.in_ns(ns.name, lambda: brioctl.is_bridge(tap))


# --- the console scripts: what they import ----------------------------------------


def _imported(
    ns: Ns, script: str, tap: str, link: str, mode: str, *args: str, **env: str
) -> set[str]:
    r = ns.run(
        [sys.executable, "-X", "importtime", str(BIN / script), tap, *args],
        tap,
        link,
        mode,
        **env,
    )
    assert r.returncode == 0, r.stderr
    # "import time: <self> | <cumulative> | <indent><module>"
    return {
        line.rsplit("|", 1)[1].strip()
        for line in r.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_bridged_kvm_ifup_and_ifdown_never_import_pyroute2(ns: Ns) -> None:
    br = ns.bridge("br", mtu=1400)
    tap = ns.tap()

    mods = _imported(ns, "kvm-ifup", tap, br, "bridged")
    assert "corral.network.brioctl" in mods
    assert not {m for m in mods if m.split(".")[0] == "pyroute2"}
    assert ns.link(tap) == Link(master=ns.index(br), up=True, mtu=1400, mac="fe" + TAP_MAC[2:])

    mods = _imported(ns, "kvm-ifdown", tap, br, "bridged", "shutdown")
    assert not {m for m in mods if m.split(".")[0] == "pyroute2"}
    assert ns.link(tap).master == 0  # a live tap is taken off the bridge (no record claims it)


def test_routed_kvm_ifup_still_uses_pyroute2(ns: Ns) -> None:
    # The same probe sees pyroute2 where it is used, so the test above can fail.
    tap = ns.tap()
    mods = _imported(ns, "kvm-ifup", tap, "100", "routed", IP="198.51.100.10")
    assert "pyroute2" in mods


# --- kvm-ifup finds custom scripts where corral.paths puts them ---------------------


@pytest.mark.parametrize("root", ["/", "/srv/node1", "/srv/node1/"])
def test_conf_dir_is_paths_conf_dir(root: str) -> None:
    assert Path(conf_dir({"CORRAL_ROOT": root})) == Paths(Path(root)).conf_dir
    assert Path(conf_dir({})) == Paths(Path("/")).conf_dir
