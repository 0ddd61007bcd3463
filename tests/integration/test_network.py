"""``gnt-network`` end to end (real CLI, masterd, fake hypervisor).

What a user sees is checked: output, exit codes, ``gnt-network list/info``,
``gnt-instance list`` and the config. NICs on a network get mode/link/VLAN
from the network's connection to their node group. Every refused request
exits with one ``Failure: <reason> [<code>]`` line and changes nothing (the
config on disk and in the master are as before).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from corral.config import store
from corral.errors import ECode
from corral.network.ovn_nb import NbClient
from corral.objects import NodeGroup
from corral.testing.cluster import TempCluster
from tests.ovsdbtools import NB_SCHEMA, ovsdb_servers

FAILURE_RE = re.compile(r"^Failure: (?P<msg>.+) \[(?P<code>[a-z_]+)\]$")


def _failure(proc: Any) -> tuple[str, ECode]:
    """The one ``Failure: <reason> [<code>]`` line of a failed command, checked."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit 0:\n{out}"
    assert "Traceback" not in out, out
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("Note:")]
    assert len(lines) == 1, f"expected one line on stderr:\n{proc.stderr}"
    m = FAILURE_RE.match(lines[0])
    assert m, f"not a Failure line: {lines[0]!r}"
    code = ECode(m.group("code"))
    assert proc.returncode == code.exit_code, lines[0]
    return m.group("msg"), code


def _table(c: TempCluster, prog: str, fields: str, *names: str) -> list[list[str]]:
    out = c.run(
        prog, "list", "--no-headers", "--separator=|", "-o", fields, *names, check=True
    ).stdout
    return [line.split("|") for line in out.splitlines()]


def snapshot(c: TempCluster) -> dict[str, Any]:
    """What a refused request must leave as it was: the config, on disk and in the master."""
    client = c.client()
    try:
        live_serial = client.call("QueryClusterInfo", [])["serial_no"]
    finally:
        client.close()
    return {"live_serial_no": live_serial, "config": c.config()}


def _add_group(c: TempCluster, name: str) -> None:
    """A second node group (no gnt-group yet): written into the config with masterd stopped."""
    c.kill_masterd(signal.SIGTERM)
    data = store.load(c.paths.config_file)
    group = NodeGroup(name=name)
    data.nodegroups[group.uuid] = group
    data.serial_no += 1
    store.save(c.paths.config_file, data)
    c.start_masterd()


# --- the happy path ---------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[TempCluster]:
    with TempCluster(prefix="corral-net-") as c:
        yield c


def test_network_lifecycle(cluster: TempCluster) -> None:
    c = cluster
    c.run(
        "gnt-network", "add", "--network=198.51.100.0/24", "--gateway=198.51.100.1",
        "--network6=2001:db8:1::/64", "--gateway6=2001:db8:1::1", "--mac-prefix=AA:00:51",
        "--tags=lab,blue", "lan",
        check=True,
    )  # fmt: skip
    # Default fields are Ganeti's; unconnected yet.
    out = c.run("gnt-network", "list", check=True).stdout.splitlines()
    assert out[0].split() == ["Network", "Subnet", "Gateway", "MacPrefix", "GroupList", "Tags"]
    row = c.run("gnt-network", "list", "--no-headers", "--separator=|", check=True).stdout
    assert row == "lan|198.51.100.0/24|198.51.100.1|aa:00:51||blue,lab\n"

    r = c.run("gnt-network", "connect", "--nic-parameters=mode=bridged,link=br7,vlan=.10", "lan")
    assert r.returncode == 0, r.stderr
    assert "connected to node group default (mode=bridged,link=br7,vlan=.10)" in r.stdout
    assert _table(c, "gnt-network", "name,group_list,group_cnt,inst_cnt") == [
        ["lan", "default (bridged, br7, .10)", "1", "0"]
    ]

    # An instance NIC on the network gets mode/link/VLAN from the connection, and a
    # MAC under the network's prefix.
    c.run(
        "gnt-instance", "add", "--no-start", "--net", "0:network=lan,ip=198.51.100.10",
        "--net", "1:link=br0", "web",
        check=True,
    )  # fmt: skip
    ((name, macs, modes, links, vlans, nets),) = _table(
        c, "gnt-instance", "name,nic.macs,nic.modes,nic.links,nic.vlans,nic.networks.names"
    )
    assert (name, modes, links, vlans, nets) == (
        "web",
        "bridged,bridged",
        "br7,br0",
        ".10,",
        "lan,-",
    )
    assert macs.split(",")[0].startswith("aa:00:51:")
    assert not macs.split(",")[1].startswith("aa:00:51:")

    info = c.run("gnt-network", "info", "lan", check=True).stdout
    uuid = c.run("gnt-network", "list", "--no-headers", "-o", "uuid", check=True).stdout.strip()
    assert info.splitlines() == [
        "Network name: lan",
        f"UUID: {uuid}",
        "Serial number: 1",
        "  Subnet: 198.51.100.0/24",
        "  Gateway: 198.51.100.1",
        "  IPv6 Subnet: 2001:db8:1::/64",
        "  IPv6 Gateway: 2001:db8:1::1",
        "  Mac Prefix: aa:00:51",
        "  Size: 256",
        "  OVN logical switch: None",
        "  connected to node groups:",
        "    default (mode:bridged link:br7 vlan:.10)",
        "  used by 1 instances:",
        "    web: 0:198.51.100.10",
    ]
    assert _table(c, "gnt-network", "inst_list,inst_cnt") == [["web", "1"]]

    # modify: clear and change values; "none" clears.
    r = c.run("gnt-network", "modify", "--gateway=198.51.100.254", "--mac-prefix=none", "lan")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-3:] == [
        "Modified network lan",
        " - gateway -> 198.51.100.254",
        " - mac_prefix -> none",
    ]
    assert _table(c, "gnt-network", "gateway,mac_prefix,serial_no") == [
        ["198.51.100.254", "-", "2"]
    ]

    # Tags work like on every other object.
    c.run("gnt-network", "add-tags", "lan", "green", check=True)
    assert c.run("gnt-network", "list-tags", "lan", check=True).stdout.split() == [
        "blue", "green", "lab",
    ]  # fmt: skip

    # In use: neither disconnect nor remove; once the instance is gone, both work.
    assert _failure(c.run("gnt-network", "disconnect", "lan"))[1] is ECode.STATE
    assert _failure(c.run("gnt-network", "remove", "lan"))[1] is ECode.STATE
    c.run("gnt-instance", "remove", "-f", "web", check=True)
    r = c.run("gnt-network", "disconnect", "lan", "default")
    assert r.returncode == 0, r.stderr
    assert "disconnected from node group default" in r.stdout
    assert "not connected to any node group" in c.run("gnt-network", "info", check=True).stdout
    c.run("gnt-network", "remove", "lan", check=True)
    assert c.run("gnt-network", "list", "--no-headers", check=True).stdout == ""
    assert c.config()["networks"] == {}


def test_ovn_network(cluster: TempCluster) -> None:
    """Against a real OVN northbound ovsdb-server: switches and ports follow the config."""
    c = cluster
    with ovsdb_servers() as servers:
        remote = servers.start(NB_SCHEMA, "nb").remote
        nb = NbClient(remote)
        c.run("gnt-cluster", "modify", f"--ovn-nb={remote}", check=True)
        info = c.run("gnt-cluster", "info", check=True).stdout
        assert f"  OVN northbound database: {remote}" in info

        c.run("gnt-network", "add", "--network=203.0.113.0/24", "--ovn", "tenant1", check=True)
        r = c.run(
            "gnt-network",
            "add",
            "--network=198.51.100.0/24",
            "--ovn-switch=ls-b",
            "tenant2",
            check=True,
        )
        assert "OVN logical switch ls-b created" in r.stdout + r.stderr
        assert _table(c, "gnt-network", "name,ovn_switch") == [
            ["tenant1", "tenant1"],
            ["tenant2", "ls-b"],
        ]
        uuid1 = c.config()["networks"]
        by_name = {n["name"]: u for u, n in uuid1.items()}
        assert nb.switch_network("tenant1") == by_name["tenant1"]
        assert nb.switch_network("ls-b") == by_name["tenant2"]
        # No NIC parameters: an OVN network connects with mode ovn on the integration bridge.
        r = c.run("gnt-network", "connect", "tenant1")
        assert r.returncode == 0, r.stderr
        assert "(mode=ovn,link=br-int,vlan=)" in r.stdout
        c.run(
            "gnt-instance", "add", "--no-start", "--net", "0:network=tenant1,ip=203.0.113.5",
            "vm1", check=True,
        )  # fmt: skip
        assert _table(c, "gnt-instance", "nic.modes,nic.links", "vm1") == [["ovn", "br-int"]]
        (nic_uuid,) = _table(c, "gnt-instance", "nic.uuids", "vm1")[0]
        port = nb.get_port(nic_uuid)
        assert port is not None and port.switch == "tenant1" and port.instance == "vm1"
        mac = _table(c, "gnt-instance", "nic.macs", "vm1")[0][0]
        assert port.addresses == (f"{mac} 203.0.113.5",)
        assert port.requested_chassis == (c.config()["nodes"][_node_uuid(c)]["name"],)
        c.run("gnt-network", "info", "tenant1", check=True)

        # A port lost in the NB (admin, restore of an old NB backup) comes back on start.
        nb.delete_port(nic_uuid)
        verify = c.run("gnt-cluster", "verify")
        assert f"NIC {nic_uuid} has no OVN port" in verify.stdout, verify.stdout
        c.run("gnt-instance", "startup", "vm1", check=True)
        verify = c.run("gnt-cluster", "verify")
        assert "OVN port " not in verify.stdout and "ERROR" not in verify.stdout, verify.stdout
        assert nb.get_port(nic_uuid) is not None
        c.run("gnt-instance", "remove", "-f", "vm1", check=True)
        assert nb.get_port(nic_uuid) is None
        c.run("gnt-network", "disconnect", "tenant1", check=True)
        c.run("gnt-network", "remove", "tenant1", check=True)
        assert nb.switch_network("tenant1") is None

        # The NB down: an OVN step fails clearly and changes nothing.
        servers.close()
        r = c.run("gnt-network", "add", "--network=203.0.113.0/24", "--ovn", "tenant3")
        assert r.returncode != 0 and "OVN logical switch tenant3" in r.stderr
        assert ["tenant3"] not in _table(c, "gnt-network", "name")

    # Empty switches OVN off.
    c.run("gnt-cluster", "modify", "--ovn-nb=", check=True)
    info = c.run("gnt-cluster", "info", check=True).stdout
    assert "  OVN northbound database: (none)" in info
    assert c.config()["cluster"]["ovn_nb"] == ""


def _node_uuid(c: TempCluster) -> str:
    (uuid,) = c.config()["nodes"]
    return str(uuid)


def test_connect_every_group_and_old_forms(cluster: TempCluster) -> None:
    c = cluster
    _add_group(c, "rack2")
    c.run("gnt-network", "add", "--network=198.51.100.0/24", "lan", check=True)
    c.run("gnt-network", "add", "--network=203.0.113.0/24", "dmz", check=True)

    # No group: every group, one opcode each.
    r = c.run("gnt-network", "connect", "-N", "link=br1", "lan")
    assert r.returncode == 0, r.stderr
    assert _table(c, "gnt-network", "group_list", "lan") == [
        ["default (bridged, br1, ), rack2 (bridged, br1, )"]
    ]
    # Ganeti 2.7-2.11's "NETWORK MODE LINK [GROUP...]" and the design's
    # "NETWORK GROUP MODE LINK" still work, with a note.
    r = c.run("gnt-network", "connect", "dmz", "routed", "100", "rack2")
    assert r.returncode == 0, r.stderr
    assert "deprecated" in r.stderr
    r = c.run("gnt-network", "connect", "dmz", "default", "bridged", "br2")
    assert r.returncode == 0, r.stderr
    assert _table(c, "gnt-network", "group_list", "dmz") == [
        ["default (bridged, br2, ), rack2 (routed, 100, )"]
    ]
    # Connecting again without parameters: a warning, nothing changes.
    before = snapshot(c)
    r = c.run("gnt-network", "connect", "dmz")
    assert r.returncode == 0, r.stderr
    assert "already connected" in r.stdout
    assert snapshot(c) == before

    # Refused for one group (already connected otherwise): nothing changes for the others.
    c.run("gnt-network", "disconnect", "dmz", "default", check=True)
    before = snapshot(c)
    msg, code = _failure(c.run("gnt-network", "connect", "-N", "mode=bridged,link=br2", "dmz"))
    assert code is ECode.STATE
    assert "already connected to node group 'rack2' with mode=routed,link=100" in msg
    assert snapshot(c) == before

    # Disconnect from every group (one not connected: a warning).
    r = c.run("gnt-network", "disconnect", "dmz")
    assert r.returncode == 0, r.stderr
    assert "is not connected to node group 'default'" in r.stdout
    assert _table(c, "gnt-network", "group_cnt", "dmz") == [["0"]]


# --- refusals: one Failure line, nothing changed ------------------------------------------------

LAN_NIC_IP = "198.51.100.10"


@pytest.fixture(scope="module")
def bad_cluster() -> Iterator[TempCluster]:
    """lan (connected, bridged br0) used by web (IPv4 and IPv6 NICs); ovn1 (OVN, connected);
    spare (not connected); plain has a NIC with 203.0.113.200, which lies in "wide"."""
    with TempCluster(prefix="corral-net-bad-") as c:
        run = c.run
        run("gnt-network", "add", "--network=198.51.100.0/24", "--gateway=198.51.100.1",
            "--network6=2001:db8:1::/64", "lan", check=True)  # fmt: skip
        run("gnt-network", "add", "--network=203.0.113.0/25", "--ovn", "ovn1", check=True)
        run("gnt-network", "add", "--network=203.0.113.128/25", "spare", check=True)
        run("gnt-network", "add", "--network=203.0.113.192/26", "wide", check=True)
        run("gnt-network", "connect", "-N", "mode=bridged,link=br0", "lan", check=True)
        run("gnt-network", "connect", "ovn1", "default", check=True)
        run("gnt-instance", "add", "--no-start", "--net", f"0:network=lan,ip={LAN_NIC_IP}",
            "--net", "1:network=lan,ip=2001:db8:1::10", "web", check=True)  # fmt: skip
        run("gnt-instance", "add", "--no-start", "--net", "0:ip=203.0.113.200", "plain",
            check=True)  # fmt: skip
        yield c


# (program, args, exit code, substrings of the reason)
BAD_CASES: list[tuple[str, list[str], ECode, list[str]]] = [
    # add: addresses
    ("gnt-network", ["add", "n2"], ECode.INVAL, ["--network option must be given"]),
    ("gnt-network", ["add", "--network=198.51.100.0", "n2"], ECode.INVAL, ["CIDR"]),
    ("gnt-network", ["add", "--network=198.51.100.0/33", "n2"], ECode.INVAL, ["valid IPv4"]),
    ("gnt-network", ["add", "--network=nonsense/24", "n2"], ECode.INVAL, ["valid IPv4"]),
    ("gnt-network", ["add", "--network=198.51.100.7/24", "n2"], ECode.INVAL, ["host bits"]),
    ("gnt-network", ["add", "--network=2001:db8::/64", "n2"], ECode.INVAL, ["IPv6", "--network6"]),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--network6=198.51.100.0/24", "n2"],
        ECode.INVAL,
        ["network6", "IPv4"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--gateway=203.0.113.1", "n2"],
        ECode.INVAL,
        ["gateway 203.0.113.1 is outside the network 198.51.100.0/24"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--gateway=198.51.100.255", "n2"],
        ECode.INVAL,
        ["broadcast address"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--gateway=bogus", "n2"],
        ECode.INVAL,
        ["'bogus' is not a valid IP address"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--gateway6=2001:db8::1", "n2"],
        ECode.INVAL,
        ["gateway6", "without its network"],
    ),
    (
        "gnt-network",
        [
            "add",
            "--network=198.51.100.0/24",
            "--network6=2001:db8:1::/64",
            "--gateway6=2001:db8:2::1",
            "n2",
        ],
        ECode.INVAL,
        ["gateway6", "outside the network 2001:db8:1::/64"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--mac-prefix=zz:00:00", "n2"],
        ECode.INVAL,
        ["mac_prefix", "not a MAC prefix"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--mac-prefix=01:00:00", "n2"],
        ECode.INVAL,
        ["multicast"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--add-reserved-ips=198.51.100.5", "n2"],
        ECode.INVAL,
        ["no IP address pool"],
    ),
    # add: names
    ("gnt-network", ["add", "--network=198.51.100.0/24", "lan"], ECode.EXISTS, ["already exists"]),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "bad/name"],
        ECode.INVAL,
        ["network name"],
    ),
    (
        "gnt-network",
        ["add", "--network=198.51.100.0/24", "--ovn-switch=ovn1", "n2"],
        ECode.NOTUNIQUE,
        ["OVN logical switch 'ovn1' already backs network 'ovn1'"],
    ),
    # connect
    ("gnt-network", ["connect", "nonet"], ECode.NOENT, ["network 'nonet' not known"]),
    ("gnt-network", ["connect", "spare", "nogroup"], ECode.NOENT, ["node group 'nogroup'"]),
    ("gnt-network", ["connect", "-N", "mode=bogus", "spare"], ECode.INVAL, ["mode", "'bogus'"]),
    ("gnt-network", ["connect", "-N", "speed=10", "spare"], ECode.INVAL, ["unknown NIC param"]),
    ("gnt-network", ["connect", "-N", "link=a/b", "spare"], ECode.INVAL, ["nicparams/link"]),
    (
        "gnt-network",
        ["connect", "-N", "mode=ovn", "spare"],
        ECode.INVAL,
        ["network 'spare' has no OVN logical switch"],
    ),
    (
        "gnt-network",
        ["connect", "-N", "mode=routed", "spare"],
        ECode.INVAL,
        ["give the link for mode routed"],
    ),
    (
        "gnt-network",
        ["connect", "-N", "mode=bridged,link=br0", "ovn1"],
        ECode.INVAL,
        ["backed by the OVN logical switch 'ovn1'", "mode ovn"],
    ),
    (
        "gnt-network",
        ["connect", "-N", "mode=bridged,link=br9", "lan"],
        ECode.STATE,
        ["already connected to node group 'default' with mode=bridged,link=br0"],
    ),
    (
        "gnt-network",
        ["connect", "wide"],
        ECode.STATE,
        ["used in node group 'default' by NICs not on the network: plain (nic0/203.0.113.200)"],
    ),
    # disconnect / remove
    (
        "gnt-network",
        ["disconnect", "lan"],
        ECode.STATE,
        [f"still used in node group 'default' by web (nic0/{LAN_NIC_IP}, nic1/2001:db8:1::10)"],
    ),
    ("gnt-network", ["disconnect", "nonet"], ECode.NOENT, ["network 'nonet' not known"]),
    ("gnt-network", ["disconnect", "lan", "nogroup"], ECode.NOENT, ["node group 'nogroup'"]),
    (
        "gnt-network",
        ["remove", "lan"],
        ECode.STATE,
        ["still connected to node group(s) default", "gnt-network disconnect lan"],
    ),
    ("gnt-network", ["remove", "nonet"], ECode.NOENT, ["network 'nonet' not known"]),
    # modify
    ("gnt-network", ["modify", "lan"], ECode.INVAL, ["at least one of the parameters"]),
    ("gnt-network", ["modify", "--gateway=203.0.113.1", "nonet"], ECode.NOENT, ["nonet"]),
    ("gnt-network", ["modify", "--gateway=203.0.113.1", "lan"], ECode.INVAL, ["outside"]),
    ("gnt-network", ["modify", "--gateway6=2001:db8:9::1", "lan"], ECode.INVAL, ["outside"]),
    ("gnt-network", ["modify", "--network6=2001:db8:1::/33", "lan"], ECode.INVAL, ["host bits"]),
    (
        "gnt-network",
        ["modify", "--network6=2001:db8:2::/64", "lan"],
        ECode.STATE,
        ["outside 2001:db8:2::/64: web (nic1/2001:db8:1::10)"],
    ),
    ("gnt-network", ["modify", "--network6=none", "lan"], ECode.STATE, ["web (nic1/"]),
    ("gnt-network", ["modify", "--mac-prefix=aa:bb", "lan"], ECode.INVAL, ["MAC prefix"]),
    # NICs on networks
    (
        "gnt-instance",
        ["add", "--no-start", "--net", "0:network=lan,link=br1", "i3"],
        ECode.INVAL,
        ["link cannot be given with network 'lan'"],
    ),
    (
        "gnt-instance",
        ["add", "--no-start", "--net", "0:network=spare", "i3"],
        ECode.INVAL,
        ["network 'spare' is not connected to node group 'default'"],
    ),
    (
        "gnt-instance",
        ["add", "--no-start", "--net", "0:network=lan,ip=203.0.113.5", "i3"],
        ECode.INVAL,
        ["203.0.113.5 is not in network 'lan'"],
    ),
    (
        "gnt-instance",
        ["add", "--no-start", "--net", "0:mode=ovn,link=br-int", "i3"],
        ECode.INVAL,
        ["mode ovn needs a network backed by an OVN logical switch"],
    ),
    (
        "gnt-instance",
        ["modify", "--net", "0:modify,mode=routed", "web"],
        ECode.INVAL,
        ["mode cannot be given with network 'lan'"],
    ),
    (
        "gnt-instance",
        ["modify", "--net", "add:network=spare", "web"],
        ECode.INVAL,
        ["not connected to node group 'default'"],
    ),
    (
        "gnt-instance",
        ["modify", "--net", "0:modify,network=lan", "plain"],
        ECode.INVAL,
        ["203.0.113.200 is not in network 'lan'"],
    ),
    # cluster: the OVN northbound remote
    ("gnt-cluster", ["modify", "--ovn-nb=tcp:198.51.100.11"], ECode.INVAL, ["ovn_nb", "expected"]),
    ("gnt-cluster", ["modify", "--ovn-nb=udp:h:6641"], ECode.INVAL, ["unknown connection method"]),
    ("gnt-cluster", ["modify", "--ovn-nb=tcp:h:70000"], ECode.INVAL, ["invalid port"]),
    ("gnt-cluster", ["modify", "--ovn-nb=unix:ovnnb_db.sock"], ECode.INVAL, ["absolute"]),
    ("gnt-cluster", ["modify", "--ovn-nb=tcp:2001:db8::1:6641"], ECode.INVAL, ["brackets"]),
    ("gnt-cluster", ["modify", "--ovn-nb=tcp:a_b:6641"], ECode.INVAL, ["invalid host"]),
]


@pytest.mark.parametrize(
    ("prog", "args", "code", "fragments"),
    BAD_CASES,
    ids=[f"{p[4:]}-{' '.join(a)}" for p, a, _, _ in BAD_CASES],
)
def test_refused_and_nothing_changed(
    bad_cluster: TempCluster, prog: str, args: list[str], code: ECode, fragments: list[str]
) -> None:
    before = snapshot(bad_cluster)
    msg, got = _failure(bad_cluster.run(prog, *args))
    assert got is code, msg
    for f in fragments:
        assert f in msg, msg
    assert snapshot(bad_cluster) == before


def test_argparse_usage_errors(bad_cluster: TempCluster) -> None:
    before = snapshot(bad_cluster)
    r = bad_cluster.run(
        "gnt-network", "add", "--network=198.51.100.0/24", "--ovn", "--ovn-switch=x", "n2"
    )
    assert r.returncode == ECode.INVAL.exit_code
    assert "not allowed with argument" in r.stderr
    assert snapshot(bad_cluster) == before


def test_valid_remotes_accepted_and_cleared(bad_cluster: TempCluster) -> None:
    c = bad_cluster
    for remote in (
        "ssl:ovn-central.example:6641",
        "tcp:[2001:db8::1]:6641",
        "unix:/run/ovn/ovnnb_db.sock",
        "tcp:198.51.100.11:6641,tcp:198.51.100.12:6641",
    ):
        c.run("gnt-cluster", "modify", f"--ovn-nb={remote}", check=True)
        assert c.config()["cluster"]["ovn_nb"] == remote
    c.run("gnt-cluster", "modify", "--ovn-nb=", check=True)
    assert c.config()["cluster"]["ovn_nb"] == ""
