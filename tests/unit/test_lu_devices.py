"""Planning ``gnt-instance modify --net/--disk``: identifiers, sequences, refusals.

Everything a modify can refuse is refused by the planner before anything
changes, so these are the rules a user meets; a real ConfigWriter (from
``init_cluster``) answers the cluster-wide questions (MACs in use, networks).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from corral import params
from corral.bootstrap import init_cluster
from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.lu import devices
from corral.lu.devices import MAX_DISKS, MAX_NICS, plan_disks, plan_nics, resolve
from corral.objects import NIC, Disk, Instance, NodeGroup
from corral.paths import Paths

OTHER_MAC = "aa:00:00:00:00:99"  # held by another instance of the cluster


@pytest.fixture
def cfg(tmp_path: Path) -> ConfigWriter:
    paths = Paths(tmp_path)
    init_cluster(paths, "c1", node_name="node1")
    c = ConfigWriter.load(paths.config_file)
    other = Instance(
        name="other", primary_node=c.master_node.uuid, hypervisor="fake", nics=[NIC(mac=OTHER_MAC)]
    )
    c.add_instance(other, [])
    return c


@pytest.fixture
def group(cfg: ConfigWriter) -> NodeGroup:
    return cfg.node_group(cfg.master_node)


def _nics(*names: str | None) -> list[NIC]:
    return [NIC(mac=f"aa:00:00:00:01:{i:02x}", name=n) for i, n in enumerate(names)]


def _disks(n: int, names: tuple[str | None, ...] = ()) -> list[Disk]:
    out = [Disk(size=64, iv_name=f"disk/{i}") for i in range(n)]
    for d, name in zip(out, names, strict=False):
        d.name = name
    return out


def _mods(*mods: tuple[str, Any, dict[str, Any]]) -> list[Any]:
    return list(mods)


# --- resolve ---------------------------------------------------------------------------


def test_resolve_index_name_uuid_and_last() -> None:
    nics = _nics("eth0", None, "eth2")
    assert resolve("nic", nics, 1, "modify") == 1
    assert resolve("nic", nics, "2", "remove") == 2  # an index given as text
    assert resolve("nic", nics, -1, "modify") == 2
    assert resolve("nic", nics, -1, "add") == 3  # append
    assert resolve("nic", nics, 3, "add") == 3  # insert at the end
    assert resolve("nic", nics, 0, "add") == 0
    assert resolve("nic", nics, "eth2", "modify") == 2
    assert resolve("nic", nics, nics[1].uuid, "remove") == 1


@pytest.mark.parametrize(
    ("count", "ident", "action", "message"),
    [
        (3, 3, "modify", "nic index 3 out of range (the instance has 3 nics)"),
        (1, 1, "remove", "nic index 1 out of range (the instance has 1 nic)"),
        (3, 4, "add", "nic index 4 out of range (the instance has 3 nics)"),
        (3, -2, "modify", "nic index -2 out of range (the instance has 3 nics)"),
        (0, 0, "modify", "nic index 0 out of range (the instance has no nics)"),
        (0, -1, "remove", "the instance has no nics"),
    ],
)
def test_resolve_out_of_range(count: int, ident: int, action: Any, message: str) -> None:
    with pytest.raises(OpPrereqError) as ei:
        resolve("nic", _nics(*[None] * count), ident, action)
    assert str(ei.value) == message
    assert ei.value.code is ECode.INVAL


def test_resolve_unknown_name_and_add_by_name() -> None:
    with pytest.raises(OpPrereqError) as ei:
        resolve("disk", _disks(2, ("root", "data")), "swap", "modify")
    assert str(ei.value) == "disk 'swap' not found (no disk has that name or UUID)"
    assert ei.value.code is ECode.NOENT
    with pytest.raises(ParameterError) as pe:
        resolve("disk", _disks(1, ("root",)), "root", "add")
    assert pe.value.field == "disks"
    assert "add takes an index (or -1), not 'root'" in str(pe.value)


# --- NICs ------------------------------------------------------------------------------


def test_add_then_remove_refers_to_the_shifted_list(cfg: ConfigWriter, group: NodeGroup) -> None:
    a, b = _nics("a", "b")
    out = plan_nics(cfg, group, [a, b], _mods(("add", 0, {"name": "new"}), ("remove", 1, {})))
    assert [(c.action, c.index) for c in out] == [("add", 0), ("remove", 1)]
    # After the insert at 0, index 1 is the NIC that was first.
    assert out[1].nic is a
    assert out[0].nic.name == "new" and out[0].nic.mac == "auto"


def test_remove_then_add_reuses_the_freed_place(cfg: ConfigWriter, group: NodeGroup) -> None:
    nics = _nics(*[None] * MAX_NICS)
    out = plan_nics(cfg, group, nics, _mods(("remove", -1, {}), ("add", -1, {})))
    assert [(c.action, c.index) for c in out] == [("remove", 7), ("add", 7)]


def test_modify_of_a_nic_added_in_the_same_job_keeps_its_mac(
    cfg: ConfigWriter, group: NodeGroup
) -> None:
    out = plan_nics(
        cfg, group, _nics(None), _mods(("add", -1, {"name": "x"}), ("modify", "x", {"link": "br1"}))
    )
    mod = out[1]
    assert (mod.action, mod.index, mod.nic.nicparams) == ("modify", 1, {"link": "br1"})
    # Not a new MAC (which would replug it): it gets the MAC the add gives it.
    assert mod.nic.mac == "auto" and not mod.mac_changed
    assert mod.old is out[0].nic and mod.nic.uuid == out[0].nic.uuid
    assert mod.relinks


def test_modify_mac(cfg: ConfigWriter, group: NodeGroup) -> None:
    nics = _nics("eth0")
    (c,) = plan_nics(cfg, group, nics, _mods(("modify", 0, {"mac": "AA:00:00:00:00:42"})))
    assert c.nic.mac == "aa:00:00:00:00:42" and c.mac_changed and not c.relinks
    (c,) = plan_nics(cfg, group, nics, _mods(("modify", 0, {"mac": "generate"})))
    assert c.nic.mac == "generate" and c.mac_changed
    # Its own MAC again: no change, and not "already in use".
    (c,) = plan_nics(cfg, group, nics, _mods(("modify", "eth0", {"mac": nics[0].mac.upper()})))
    assert c.nic.mac == nics[0].mac and not c.mac_changed
    # Nothing given: the NIC as configured (the re-plug repair).
    (c,) = plan_nics(cfg, group, nics, _mods(("modify", 0, {})))
    assert c.nic.mac == nics[0].mac and not c.mac_changed and not c.relinks
    assert c.nic.uuid == nics[0].uuid and c.nic is not nics[0]


def test_modify_relinks_on_link_or_ip(cfg: ConfigWriter, group: NodeGroup) -> None:
    nics = _nics(None)
    (c,) = plan_nics(cfg, group, nics, _mods(("modify", 0, {"ip": "198.51.100.7"})))
    assert c.nic.ip == "198.51.100.7" and c.relinks
    nics[0].nicparams = {"link": "br1"}
    (c,) = plan_nics(cfg, group, nics, _mods(("modify", 0, {"link": "default"})))
    assert c.nic.nicparams == {} and c.relinks  # back to the cluster's link


@pytest.mark.parametrize(
    ("mods", "code", "message"),
    [
        ([("add", -1, {"mac": OTHER_MAC})], ECode.NOTUNIQUE, f"{OTHER_MAC} already in use"),
        ([("modify", 0, {"mac": OTHER_MAC})], ECode.NOTUNIQUE, f"{OTHER_MAC} already in use"),
        (
            [("add", -1, {"mac": "aa:00:00:00:00:42"}), ("add", -1, {"mac": "aa:00:00:00:00:42"})],
            ECode.NOTUNIQUE,
            "nics[1]: MAC address aa:00:00:00:00:42 already in use",
        ),
        ([("add", -1, {"mac": "zz:00:00:00:00:01"})], ECode.INVAL, "nics[0].mac: not a valid"),
        ([("add", -1, {"mac": "01:00:00:00:00:01"})], ECode.INVAL, "is a multicast address"),
        ([("add", -1, {"mode": "routed"})], ECode.INVAL, "nics[0].ip: routed NICs need an IP"),
        ([("modify", 0, {"mode": "routed"})], ECode.INVAL, "routed NICs need an IP"),
        ([("add", -1, {"ip": "1.2.3"})], ECode.INVAL, "nics[0].ip: not a valid IP address"),
        ([("add", -1, {"ip": "pool"})], ECode.INVAL, "IP pools need a network"),
        ([("add", -1, {"mode": "bogus"})], ECode.INVAL, "nics[0]/mode"),
        ([("add", -1, {"network": "nonet"})], ECode.NOENT, "network 'nonet' not known"),
        (
            [("add", -1, {"bogus": 1, "link": "br1"})],
            ECode.INVAL,
            "nics[0]: unknown parameter(s) bogus; known: mac, ip, mode, link, vlan, network, name",
        ),
        ([("modify", 0, {"size": 1})], ECode.INVAL, "nics[0]: unknown parameter(s) size"),
        ([("remove", 0, {"mac": "auto"})], ECode.INVAL, "nics[0]: remove takes no parameters"),
        ([("add", -1, {"name": "eth0"})], ECode.NOTUNIQUE, "duplicate NIC name(s): eth0"),
        (
            [("add", -1, {"name": "x"}), ("add", -1, {"name": "x"})],
            ECode.NOTUNIQUE,
            "duplicate NIC name(s): x",
        ),
        ([("modify", 1, {"name": "eth0"})], ECode.NOTUNIQUE, "duplicate NIC name(s): eth0"),
    ],
)
def test_nic_refusals(
    cfg: ConfigWriter,
    group: NodeGroup,
    mods: list[Any],
    code: ECode,
    message: str,
) -> None:
    nics = _nics("eth0", None)
    before = copy.deepcopy(nics)
    with pytest.raises(OpPrereqError) as ei:
        plan_nics(cfg, group, nics, mods)
    assert ei.value.code is code
    assert message in str(ei.value)
    # The planner works on a copy: the instance's NICs are as they were.
    assert nics == before
    assert not cfg.mac_in_use("aa:00:00:00:00:42")


def test_names_are_checked_on_the_final_list(cfg: ConfigWriter, group: NodeGroup) -> None:
    # Renaming eth0 frees its name for a NIC added later in the same job.
    out = plan_nics(
        cfg,
        group,
        _nics("eth0"),
        _mods(("modify", 0, {"name": "lan"}), ("add", -1, {"name": "eth0"})),
    )
    assert [c.nic.name for c in out] == ["lan", "eth0"]


def test_at_most_eight_nics(cfg: ConfigWriter, group: NodeGroup) -> None:
    with pytest.raises(OpPrereqError, match=f"at most {MAX_NICS} NICs") as ei:
        plan_nics(cfg, group, _nics(*[None] * MAX_NICS), _mods(("add", -1, {})))
    assert ei.value.code is ECode.NORES
    with pytest.raises(OpPrereqError, match=f"at most {MAX_NICS} NICs"):
        plan_nics(
            cfg, group, _nics(*[None] * 6), _mods(("add", -1, {}), ("add", -1, {}), ("add", 0, {}))
        )
    assert (
        len(plan_nics(cfg, group, _nics(*[None] * 6), _mods(("add", -1, {}), ("add", 0, {})))) == 2
    )


# --- disks -----------------------------------------------------------------------------


def test_disk_add_modify_remove_sequence() -> None:
    disks = _disks(2, ("root", "data"))
    out = plan_disks(
        "file",
        disks,
        _mods(
            ("add", 1, {"size": 128, "name": "swap", "mode": "ro", "spindles": 2}),
            ("modify", "data", {"mode": "ro", "name": "old"}),
            ("remove", 2, {}),
        ),
    )
    assert [(c.action, c.index) for c in out] == [("add", 1), ("modify", 2), ("remove", 2)]
    add = out[0].disk
    assert (add.dev_type, add.size, add.mode, add.name, add.spindles) == (
        "file",
        128,
        "ro",
        "swap",
        2,
    )
    mod = out[1]
    assert mod.old is disks[1] and (mod.disk.mode, mod.disk.name) == ("ro", "old")
    assert mod.disk.uuid == disks[1].uuid and disks[1].mode == "rw"  # the original untouched
    assert out[2].disk is mod.disk  # the remove sees the disk as the modify left it


def test_remove_of_the_last_disk_is_refused() -> None:
    with pytest.raises(OpPrereqError, match="cannot remove the last disk") as ei:
        plan_disks("file", _disks(1), _mods(("remove", 0, {})))
    assert ei.value.code is ECode.INVAL
    with pytest.raises(OpPrereqError, match="cannot remove the last disk"):
        plan_disks("file", _disks(2), _mods(("remove", 0, {}), ("remove", 0, {})))
    # Adding first makes room: the old disk can go.
    out = plan_disks("file", _disks(1), _mods(("add", -1, {"size": 8}), ("remove", 0, {})))
    assert [(c.action, c.index) for c in out] == [("add", 1), ("remove", 0)]


def test_diskless_refuses_disk_operations() -> None:
    tries: list[tuple[str, Any, dict[str, Any]]] = [
        ("add", -1, {"size": 8}),
        ("modify", 0, {"mode": "ro"}),
        ("remove", 0, {}),
    ]
    for mod in tries:
        with pytest.raises(OpPrereqError) as ei:
            plan_disks("diskless", [], _mods(mod))
        assert str(ei.value) == "disk operations are not possible on a diskless instance"
    assert plan_disks("diskless", [], []) == []


def test_at_most_sixteen_disks() -> None:
    with pytest.raises(OpPrereqError, match=f"at most {MAX_DISKS} disks") as ei:
        plan_disks("file", _disks(MAX_DISKS), _mods(("add", -1, {"size": 8})))
    assert ei.value.code is ECode.NORES
    out = plan_disks("file", _disks(MAX_DISKS - 1), _mods(("add", -1, {"size": 8})))
    assert out[0].index == MAX_DISKS - 1


@pytest.mark.parametrize(
    ("mods", "message"),
    [
        ([("add", -1, {"size": 8, "bogus": 1})], "disks[0]: unknown parameter(s) bogus; known:"),
        ([("modify", 0, {"size": 128})], "disks[0]: unknown parameter(s) size; known: mode, name"),
        ([("add", -1, {})], "disks[0].size: a new disk needs a size"),
        ([("add", -1, {"size": 0})], "disks[0].size: size 0 MiB out of range"),
        ([("add", -1, {"size": "big"})], "disks[0].size: not a size in MiB: 'big'"),
        ([("add", -1, {"size": 8, "mode": "xx"})], "disks[0].mode: access mode must be rw or ro"),
        ([("modify", 0, {"mode": "wo"})], "disks[0].mode: access mode must be rw or ro"),
        ([("remove", 1, {"size": 8})], "disks[0]: remove takes no parameters"),
        ([("add", -1, {"size": 8, "name": "root"})], "duplicate disk name(s): root"),
        ([("add", "root", {"size": 8})], "disks: add takes an index"),
        ([("modify", 2, {"mode": "ro"})], "disk index 2 out of range (the instance has 2 disks)"),
    ],
)
def test_disk_refusals(mods: list[Any], message: str) -> None:
    disks = _disks(2, ("root", None))
    with pytest.raises(OpPrereqError) as ei:
        plan_disks("file", disks, mods)
    assert message in str(ei.value)
    assert ei.value.code is (ECode.NOTUNIQUE if "duplicate" in message else ECode.INVAL)
    assert [(d.name, d.mode, d.size) for d in disks] == [("root", "rw", 64), (None, "rw", 64)]


def test_nic_text() -> None:
    nic = NIC(mac="aa:00:00:00:00:01", ip="198.51.100.7", name="lan")
    filled = params.NIC.fill({"mode": "routed", "link": "rt1"})
    assert devices.nic_text(nic, filled) == (
        "mac=aa:00:00:00:00:01,ip=198.51.100.7,mode=routed,link=rt1,vlan=,name=lan"
    )
