"""``gnt-network``'s syntax and the checks of network values (no master)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from corral import objects, opcodes
from corral.cli import common as cli_common
from corral.cli import gnt_network
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.lu import network_checks as nc

# --- the CLI: opcodes it builds ---------------------------------------------------------------

GROUPS = [("default", "uuid-default"), ("rack2", "uuid-rack2")]


class _FakeClient:
    """Validates each opcode as the master's decoder would; records jobs; knows two groups."""

    def __init__(self, fail_dry_run: bool = False) -> None:
        self.jobs: list[list[dict[str, Any]]] = []
        self.fail_dry_run = fail_dry_run

    def query(self, what: str, fields: list[str], *rest: Any) -> dict[str, Any]:
        assert (what, fields) == ("group", ["name", "uuid"])
        return {"data": [[[0, n], [0, u]] for n, u in GROUPS]}

    def submit_job(self, ops: list[dict[str, Any]]) -> int:
        for op in ops:
            opcodes.from_obj(op)
        self.jobs.append(ops)
        return len(self.jobs)

    def wait_for_job(self, job_id: int, feedback: Any = None) -> list[Any]:
        ops = self.jobs[job_id - 1]
        if self.fail_dry_run and ops[0].get("dry_run"):
            raise OpPrereqError("refused for rack2", ECode.STATE)
        return [None] * len(ops)

    def close(self) -> None:
        pass


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], fake: _FakeClient) -> int:
    monkeypatch.setattr(cli_common, "Client", lambda: fake)
    return cli_common.run("gnt-network", gnt_network.COMMANDS, "test", argv)


@pytest.mark.parametrize(
    ("positional", "nicparams", "groups", "params"),
    [
        ([], None, [], {}),
        (["rack2"], "mode=routed,link=100", ["rack2"], {"mode": "routed", "link": "100"}),
        ([], "link=br1,vlan=.10", [], {"link": "br1", "vlan": ".10"}),
        # Ganeti 2.7-2.11: NETWORK MODE LINK [GROUP...]
        (["bridged", "br0"], None, [], {"mode": "bridged", "link": "br0"}),
        (["routed", "100", "a", "b"], None, ["a", "b"], {"mode": "routed", "link": "100"}),
        # the design's NETWORK GROUP MODE LINK
        (["rack2", "ovn", "br-int"], None, ["rack2"], {"mode": "ovn", "link": "br-int"}),
        # with -N, words are groups whatever they look like
        (
            ["bridged", "br0"],
            "mode=routed,link=1",
            ["bridged", "br0"],
            {"mode": "routed", "link": "1"},
        ),
    ],
)
def test_connect_params(
    positional: list[str], nicparams: str | None, groups: list[str], params: dict[str, str]
) -> None:
    assert gnt_network.connect_params(positional, nicparams) == (groups, params)


@pytest.mark.parametrize(
    ("nicparams", "fragment"),
    [("speed=10", r"unknown NIC parameter\(s\) speed"), ("mode=a,mode=b", "given twice")],
)
def test_connect_params_errors(nicparams: str, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        gnt_network.connect_params([], nicparams)


def test_connect_every_group_dry_runs_first(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeClient()
    assert _run(monkeypatch, ["connect", "-N", "mode=bridged,link=br1", "lan"], fake) == 0
    dry, real = fake.jobs
    assert [o["group_name"] for o in real] == ["default", "rack2"]
    assert all(o.get("dry_run") for o in dry) and not any(o.get("dry_run") for o in real)
    assert real[0] == {
        "OP_ID": "OP_NETWORK_CONNECT",
        "network_name": "lan",
        "group_name": "default",
        "network_mode": "bridged",
        "network_link": "br1",
        "conflicts_check": True,
        "priority": 0,
    }


def test_connect_refused_in_dry_run_submits_nothing_real(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeClient(fail_dry_run=True)
    assert _run(monkeypatch, ["connect", "lan"], fake) == ECode.STATE.exit_code
    assert len(fake.jobs) == 1 and all(o["dry_run"] for o in fake.jobs[0])


def test_connect_one_group_by_uuid_no_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeClient()
    argv = ["connect", "--no-conflicts-check", "lan", "uuid-rack2"]
    assert _run(monkeypatch, argv, fake) == 0
    ((op,),) = fake.jobs
    assert (op["group_name"], op["conflicts_check"]) == ("rack2", False)
    assert "network_mode" not in op  # the master picks the default


def test_connect_unknown_group_submits_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _FakeClient()
    assert _run(monkeypatch, ["connect", "lan", "default", "nope"], fake) == 3
    assert fake.jobs == []
    assert "node group 'nope' not known [unknown_entity]" in capsys.readouterr().err


def test_disconnect_every_group(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeClient()
    assert _run(monkeypatch, ["disconnect", "lan"], fake) == 0
    _dry, real = fake.jobs
    assert [(o["OP_ID"], o["group_name"]) for o in real] == [
        ("OP_NETWORK_DISCONNECT", "default"),
        ("OP_NETWORK_DISCONNECT", "rack2"),
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--network=198.51.100.0/24", "lan"], {}),
        (["--network=198.51.100.0/24", "--ovn", "lan"], {"ovn_switch": "lan"}),
        (["--network=198.51.100.0/24", "--ovn-switch=ls1", "lan"], {"ovn_switch": "ls1"}),
        (
            ["--network=198.51.100.0/24", "--gateway=198.51.100.1", "--tags=a,b", "lan"],
            {"gateway": "198.51.100.1", "tags": ["a", "b"]},
        ),
        (
            [
                "--network=198.51.100.0/24",
                "--network6=2001:db8::/64",
                "--mac-prefix=aa:00:01",
                "--dry-run",
                "lan",
            ],
            {"network6": "2001:db8::/64", "mac_prefix": "aa:00:01", "dry_run": True},
        ),
    ],
)
def test_add_opcode(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict[str, Any]
) -> None:
    fake = _FakeClient()
    assert _run(monkeypatch, ["add", *argv], fake) == 0
    ((op,),) = fake.jobs
    base = {
        "OP_ID": "OP_NETWORK_ADD",
        "network_name": "lan",
        "network": "198.51.100.0/24",
        "conflicts_check": True,
        "priority": 0,
    }
    assert op == {**base, **expected}


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["add", "lan"], ECode.INVAL),  # --network is mandatory
        (["add", "--network=198.51.100.0/24", "--ovn", "--ovn-switch=x", "lan"], ECode.INVAL),
        (["modify", "lan"], ECode.INVAL),  # nothing to change
    ],
)
def test_usage_errors_submit_nothing(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], code: ECode
) -> None:
    fake = _FakeClient()
    try:
        rc = _run(monkeypatch, argv, fake)
    except SystemExit as exit_:  # argparse
        rc = int(exit_.code or 0)
    assert rc == code.exit_code
    assert fake.jobs == []


def test_group_list_format() -> None:
    value = [["default", "bridged", "br0", ""], ["rack2", "routed", "100", ".10"]]
    assert (
        gnt_network.format_group_list(value) == "default (bridged, br0, ), rack2 (routed, 100, .10)"
    )


def test_start_up_loads_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from corral.cli import common, gnt_network\n"
        "for argv in (['list'], ['connect', '-N', 'link=br0', 'lan'], ['info']):\n"
        "    common.build_parser('p', gnt_network.COMMANDS, 'd', argv).parse_args(argv)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy = {"asyncio", "ssl", "aiohttp", "cryptography", "msgspec", "typing_extensions"}
    assert "corral.cli.gnt_network" in out.stdout.split()
    assert sorted(m for m in out.stdout.split() if m.split(".")[0] in heavy) == []


# --- the checks of values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [("198.51.100.0/24", "198.51.100.0/24"), (" 203.0.113.128/25", "203.0.113.128/25")],
)
def test_network4(text: str, normal: str) -> None:
    assert nc.network4(text.strip()) == normal


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("198.51.100.0", "CIDR"),
        ("198.51.100.0/33", "not a valid IPv4"),
        ("198.51.100.9/24", "host bits set; the network is 198.51.100.0/24"),
        ("2001:db8::/32", "IPv6 network, not IPv4"),
        ("x/24", "not a valid IPv4"),
    ],
)
def test_network4_errors(text: str, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment) as ei:
        nc.network4(text)
    assert ei.value.field == "network"


def test_network6() -> None:
    assert nc.network6("2001:DB8:1::/64") == "2001:db8:1::/64"
    with pytest.raises(ParameterError, match="host bits"):
        nc.network6("2001:db8:1::1/64")


@pytest.mark.parametrize(
    ("gw", "net", "fragment"),
    [
        ("203.0.113.1", "198.51.100.0/24", "outside the network"),
        ("198.51.100.0", "198.51.100.0/24", "network address"),
        ("198.51.100.255", "198.51.100.0/24", "broadcast address"),
        ("2001:db8::1", "198.51.100.0/24", "outside the network"),
        ("2001:db8::1", None, "without its network"),
        ("198.51.100", "198.51.100.0/24", "not a valid IP address"),
    ],
)
def test_gateway_errors(gw: str, net: str | None, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        nc.gateway(gw, net, "gateway")


def test_gateway_ok() -> None:
    assert nc.gateway("198.51.100.1", "198.51.100.0/24", "gateway") == "198.51.100.1"
    assert nc.gateway("2001:DB8::1", "2001:db8::/64", "gateway6") == "2001:db8::1"
    assert nc.gateway("198.51.100.0", "198.51.100.0/31", "gateway") == "198.51.100.0"  # RFC 3021


def test_mac_prefix() -> None:
    assert nc.mac_prefix("AA:00:0F") == "aa:00:0f"
    for bad, fragment in (("aa:00", "not a MAC prefix"), ("03:00:00", "multicast")):
        with pytest.raises(ParameterError, match=fragment):
            nc.mac_prefix(bad)


@pytest.mark.parametrize(
    "remote",
    [
        "tcp:198.51.100.11:6641",
        "ssl:ovn.example.org:6641",
        "tcp:[2001:db8::1]:6641",
        "unix:/run/ovn/ovnnb_db.sock",
        "tcp:198.51.100.11:6641,tcp:198.51.100.12:6641",
    ],
)
def test_ovn_remote_accepted(remote: str) -> None:
    assert nc.ovn_nb_remote(remote) == remote


@pytest.mark.parametrize(
    ("remote", "fragment"),
    [
        ("198.51.100.11:6641", "unknown connection method"),
        ("tcp:198.51.100.11", "expected tcp:HOST:PORT"),
        ("tcp::6641", "expected tcp:HOST:PORT"),
        ("tcp:h:0", "invalid port"),
        ("tcp:h:http", "invalid port"),
        ("ptcp:6641", "unknown connection method"),
        ("unix:relative.sock", "absolute"),
        ("tcp:2001:db8::1:6641", "brackets"),
        ("tcp:[zz::1]:6641", "invalid IPv6"),
        ("tcp:-bad:6641", "invalid host"),
        ("tcp:h:1,", "expected"),
        ("nohost", "expected"),
    ],
)
def test_ovn_remote_refused(remote: str, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment) as ei:
        nc.ovn_nb_remote(remote)
    assert ei.value.field == "ovn_nb"


def test_ovn_remote_empty_is_off() -> None:
    assert nc.ovn_nb_remote("") == "" == nc.ovn_nb_remote("  ")


# --- connection parameters ---------------------------------------------------------------


def _cluster(**nicparams: str) -> objects.Cluster:
    return objects.Cluster(cluster_name="c", master_node="n", nicparams={"default": nicparams})


def test_connection_defaults() -> None:
    group = objects.NodeGroup(name="default")
    plain = objects.Network(name="lan", network="198.51.100.0/24")
    ovn = objects.Network(name="t1", network="203.0.113.0/24", ovn_switch="t1")
    cluster = _cluster(link="br9", vlan=".5")
    assert nc.connection_params(cluster, group, plain, None, None, None) == {
        "mode": "bridged",
        "link": "br9",
        "vlan": ".5",
    }
    assert nc.connection_params(cluster, group, ovn, None, None, None) == {
        "mode": "ovn",
        "link": "br-int",
        "vlan": "",
    }
    assert nc.connection_params(cluster, group, plain, "routed", "100", None) == {
        "mode": "routed",
        "link": "100",
        "vlan": "",  # the default VLAN is the default mode's
    }
    with pytest.raises(ParameterError, match="give the link for mode routed"):
        nc.connection_params(cluster, group, plain, "routed", None, None)


def test_nic_network_params() -> None:
    net = objects.Network(name="lan", network="198.51.100.0/24")
    group = objects.NodeGroup(name="default", networks={net.uuid: {"mode": "routed", "link": "1"}})
    assert nc.nic_network_params(group, net, {}, "nics[0]") == {"mode": "routed", "link": "1"}
    assert nc.nic_network_params(group, net, {"link": None}, "nics[0]")["link"] == "1"
    with pytest.raises(ParameterError, match="link, mode cannot be given"):
        nc.nic_network_params(group, net, {"mode": "bridged", "link": "x"}, "nics[0]")
    with pytest.raises(OpPrereqError, match="not connected to node group 'g2'") as ei:
        nc.nic_network_params(objects.NodeGroup(name="g2"), net, {}, "nics[0]")
    assert ei.value.code is ECode.INVAL
