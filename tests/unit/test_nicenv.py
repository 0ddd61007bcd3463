"""The kvm-ifup environment, VLAN syntax, routing-table names and tap files."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import ECode, HypervisorError
from corral.network import nicfiles
from corral.network.nicenv import NicEnv, VlanPlan, ifup_env, parse_env, parse_vlan
from corral.network.setup import resolve_table
from corral.params import NicParams
from corral.rpc.types import NicSpec

UUID = "5f2b0c3e-1111-2222-3333-444455556666"


def _nic(**kw: object) -> NicSpec:
    fields: dict[str, object] = {
        "uuid": UUID,
        "index": 1,
        "mac": "aa:00:00:11:22:33",
        "nicparams": NicParams(mode="bridged", link="br0"),
    }
    fields.update(kw)
    return NicSpec(**fields)  # type: ignore[arg-type]


def test_minimal_bridged_env_is_exactly_ganetis() -> None:
    env = ifup_env("inst1", [], _nic(), "tap3", search_path="/usr/bin:/bin")
    assert env == {
        "PATH": "/usr/bin:/bin:/sbin:/usr/sbin",
        "INSTANCE": "inst1",
        "MAC": "aa:00:00:11:22:33",
        "MODE": "bridged",
        "INTERFACE": "tap3",
        "INTERFACE_INDEX": "1",
        "INTERFACE_UUID": UUID,
        "TAGS": "",
        "LINK": "br0",
        "BRIDGE": "br0",
    }


def test_full_env_with_network_and_optional_fields() -> None:
    nic = _nic(
        name="web",
        ip="198.51.100.10",
        nicparams=NicParams(mode="bridged", link="br1", vlan=".10:20"),
        network={
            "NETWORK_NAME": "net1",
            "NETWORK_SUBNET": "198.51.100.0/24",
            "NETWORK_GATEWAY": "198.51.100.1",
            "NETWORK_GATEWAY6": "",  # unset fields are not passed
            "not_a_network_key": "x",
        },
    )
    env = ifup_env("inst1", ["a", "b:c"], nic, "tap0", search_path="/bin")
    assert env["TAGS"] == "a b:c"
    assert env["IP"] == "198.51.100.10"
    assert env["INTERFACE_NAME"] == "web"
    assert env["VLAN"] == ".10:20"
    assert env["BRIDGE"] == env["LINK"] == "br1"
    assert env["NETWORK_NAME"] == "net1"
    assert env["NETWORK_SUBNET"] == "198.51.100.0/24"
    assert env["NETWORK_GATEWAY"] == "198.51.100.1"
    assert "NETWORK_GATEWAY6" not in env
    assert "not_a_network_key" not in env


def test_routed_env_has_no_bridge_and_path_defaults_to_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/opt/x/bin")
    nic = _nic(ip="2001:db8::5", nicparams=NicParams(mode="routed", link="100"))
    env = ifup_env("inst1", [], nic, "tap0")
    assert env["PATH"] == "/opt/x/bin:/sbin:/usr/sbin"
    assert env["MODE"] == "routed"
    assert env["LINK"] == "100"
    assert "BRIDGE" not in env
    assert "VLAN" not in env


def test_parse_env_reads_back_what_ifup_env_wrote() -> None:
    nic = _nic(ip="198.51.100.9", nicparams=NicParams(mode="routed", link="main"))
    parsed = parse_env(ifup_env("i9", [], nic, "tap7", search_path="/bin"))
    assert parsed == NicEnv(
        interface="tap7", mode="routed", link="main", ip="198.51.100.9", instance="i9", index="1"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [({"MODE": "bridged"}, "No network interface"), ({"INTERFACE": "tap0"}, "MODE not")],
)
def test_parse_env_requires_interface_and_mode(env: dict[str, str], message: str) -> None:
    with pytest.raises(HypervisorError, match=message):
        parse_env(env)


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("", None),
        (".10", VlanPlan(untagged=10, tagged=())),
        ("10", VlanPlan(untagged=10, tagged=())),
        (":20:30", VlanPlan(untagged=None, tagged=(20, 30))),
        (".10:20:30", VlanPlan(untagged=10, tagged=(20, 30))),
        ("4094", VlanPlan(untagged=4094, tagged=())),
    ],
)
def test_vlan_syntax(text: str, plan: VlanPlan | None) -> None:
    assert parse_vlan(text) == plan


@pytest.mark.parametrize("text", [".", ":", ".0", ":4095", ".10:x", "..10", ".10:10", ":20:"])
def test_bad_vlan_is_refused_clearly(text: str) -> None:
    with pytest.raises(HypervisorError) as err:
        parse_vlan(text)
    assert err.value.code is ECode.INVAL
    assert repr(text) in str(err.value)


def test_vlan_plan_lists_untagged_first() -> None:
    assert VlanPlan(untagged=10, tagged=(20, 30)).vids == (10, 20, 30)


# --- routing tables ---------------------------------------------------------------


def test_resolve_table_numbers_builtins_and_names(tmp_path: Path) -> None:
    rt = tmp_path / "rt_tables"
    rt.write_text("# comment\n255\tlocal\n254 main\n100\tcustomers # inline\n")
    rtd = tmp_path / "rt_tables.d"
    rtd.mkdir()
    (rtd / "extra.conf").write_text("1000 isp2\n")
    files = (rt, rtd)
    assert resolve_table("", files=files) == 254
    assert resolve_table("main", files=files) == 254
    assert resolve_table("100", files=files) == 100
    assert resolve_table("customers", files=files) == 100
    assert resolve_table("isp2", files=files) == 1000
    assert resolve_table("70000", files=files) == 70000


@pytest.mark.parametrize(
    ("link", "message"), [("nosuch", "Unknown routing table"), ("255", "local"), ("0", "unspec")]
)
def test_resolve_table_refuses_unknown_and_reserved(
    tmp_path: Path, link: str, message: str
) -> None:
    with pytest.raises(HypervisorError, match=message) as err:
        resolve_table(link, files=(tmp_path / "missing",))
    assert err.value.code is ECode.ENVIRON


# --- tap files --------------------------------------------------------------------


def test_tap_files_by_uuid_with_index_links(tmp_path: Path) -> None:
    base = tmp_path / "kvm-hypervisor" / "nic"
    nicfiles.write_tap(base, "inst1", "uuid-a", 0, "tap4")
    nicfiles.write_tap(base, "inst1", "uuid-b", 1, "tap5")
    d = base / "inst1"
    assert (d / "uuid-a").read_text() == "tap4\n"
    assert (d / "0").is_symlink() and str((d / "0").readlink()) == "uuid-a"
    assert (d / "1").read_text() == "tap5\n"  # the compatibility path reads through
    assert nicfiles.read_tap(base, "inst1", "uuid-b") == "tap5"
    assert nicfiles.read_tap(base, "inst1", "uuid-x") is None
    assert nicfiles.list_taps(base, "inst1") == [
        nicfiles.TapFile(uuid="uuid-a", tap="tap4", index=0),
        nicfiles.TapFile(uuid="uuid-b", tap="tap5", index=1),
    ]
    assert sorted(p.name for p in d.iterdir()) == ["0", "1", "uuid-a", "uuid-b"]  # no temp files


def test_index_shift_the_newest_nic_owns_the_index(tmp_path: Path) -> None:
    base = tmp_path
    nicfiles.write_tap(base, "i", "uuid-a", 0, "tap1")
    nicfiles.write_tap(base, "i", "uuid-b", 1, "tap2")
    # uuid-a removed without hotplug; uuid-b is index 0 after the next change
    nicfiles.write_tap(base, "i", "uuid-c", 0, "tap3")
    assert str((base / "i" / "0").readlink()) == "uuid-c"
    nicfiles.remove_tap(base, "i", "uuid-a")  # its index link was taken: stays
    assert (base / "i" / "0").exists()
    assert [t.uuid for t in nicfiles.list_taps(base, "i")] == ["uuid-c", "uuid-b"]
    nicfiles.remove_tap(base, "i", "uuid-c")
    assert not (base / "i" / "0").exists()
    assert nicfiles.list_taps(base, "i") == [nicfiles.TapFile(uuid="uuid-b", tap="tap2", index=1)]
    nicfiles.remove_tap(base, "i", "uuid-c")  # idempotent
    nicfiles.remove_instance(base, "i")
    assert not (base / "i").exists()
    assert nicfiles.list_taps(base, "i") == []
    nicfiles.remove_instance(base, "i")


@pytest.mark.parametrize(
    ("instance", "uuid"), [("../x", "u"), ("i", "../u"), ("i", "7"), (".i", "u")]
)
def test_tap_files_refuse_names_that_escape_or_collide(
    tmp_path: Path, instance: str, uuid: str
) -> None:
    with pytest.raises(HypervisorError):
        nicfiles.write_tap(tmp_path, instance, uuid, 0, "tap0")
    assert list(tmp_path.iterdir()) == []
