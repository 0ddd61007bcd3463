"""Parameters: sizes, the BE/NIC/disk groups, overrides and inheritance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import params
from corral.errors import ECode, ParameterError
from corral.params import BE, MAX_SIZE_MIB, NIC, BeParams, apply_overrides, disk_group, parse_size

# --- parse_size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512", 512),
        ("512M", 512),
        ("512m", 512),
        ("512MiB", 512),
        ("512mb", 512),
        ("1.5G", 1536),
        ("1g", 1024),
        ("1T", 1024 * 1024),
        ("1t", 1024 * 1024),
        (" 2 G ", 2048),
        ("1P", 1024**3),
        ("1.5", 2),  # fractions round up to whole MiB
        ("1k", 1),
        ("2048K", 2),
    ],
)
def test_parse_size_accepts_units(text: str, mib: int) -> None:
    assert parse_size(text) == mib


@pytest.mark.parametrize("text", ["0", "0M", "0.0G", "-1", "-1G", "abc", "", "1X", "1.5.5G", "G"])
def test_parse_size_rejects_nonsense_naming_the_field(text: str) -> None:
    with pytest.raises(ParameterError) as ei:
        parse_size(text, "disks[0].size")
    assert ei.value.field == "disks[0].size"
    assert ei.value.code is ECode.INVAL
    assert str(ei.value).startswith("disks[0].size: ")
    assert repr(text) in str(ei.value)


@pytest.mark.parametrize("text", ["2P", "1025T", "9999999999", "100000P"])
def test_parse_size_rejects_absurd_sizes(text: str) -> None:
    with pytest.raises(ParameterError, match="absurdly large") as ei:
        parse_size(text, "size")
    assert ei.value.field == "size"


@given(st.integers(min_value=1, max_value=MAX_SIZE_MIB))
def test_parse_size_mebibytes_property(n: int) -> None:
    assert parse_size(f"{n}M") == n
    assert parse_size(str(n)) == n


@given(st.integers(min_value=1, max_value=MAX_SIZE_MIB // 1024))
def test_parse_size_gibibytes_property(n: int) -> None:
    assert parse_size(f"{n}G") == n * 1024
    assert parse_size(f"{n}g") == n * 1024


@given(st.integers(min_value=MAX_SIZE_MIB + 1, max_value=10 * MAX_SIZE_MIB))
def test_parse_size_above_limit_always_rejected(n: int) -> None:
    with pytest.raises(ParameterError):
        parse_size(f"{n}M")


# --- BE: parse_text ----------------------------------------------------------------------


def test_memory_alias_sets_maxmem_and_minmem() -> None:
    assert BE.parse_text({"memory": "1G"}, "beparams") == {"maxmem": 1024, "minmem": 1024}


def test_parse_text_converts_each_type() -> None:
    out = BE.parse_text(
        {"vcpus": "4", "maxmem": "512M", "auto_balance": "no", "always_failover": "yes"},
        "beparams",
    )
    assert out == {"vcpus": 4, "maxmem": 512, "auto_balance": False, "always_failover": True}
    assert type(out["vcpus"]) is int
    assert type(out["auto_balance"]) is bool


def test_default_resets_an_override() -> None:
    out = BE.parse_text({"memory": "default", "vcpus": "default"}, "beparams")
    assert out == {"maxmem": None, "minmem": None, "vcpus": None}
    # ...and applying that to stored overrides removes them.
    stored = {"maxmem": 2048, "minmem": 1024, "vcpus": 2, "spindle_use": 3}
    assert apply_overrides(stored, out) == {"spindle_use": 3}


def test_unknown_parameter_lists_known_names() -> None:
    with pytest.raises(ParameterError) as ei:
        BE.parse_text({"memroy": "1G"}, "beparams")
    err = ei.value
    assert err.field == "beparams/memroy"
    assert err.code is ECode.INVAL
    msg = str(err)
    assert "'memroy'" in msg
    for name in BE.names():
        assert name in msg


def test_unknown_parameter_with_default_value_is_still_an_error() -> None:
    with pytest.raises(ParameterError, match="unknown be parameter"):
        BE.parse_text({"bogus": "default"}, "beparams")


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ({"vcpus": "many"}, "beparams/vcpus", "invalid integer"),
        ({"vcpus": "1.5"}, "beparams/vcpus", "invalid integer"),
        ({"auto_balance": "maybe"}, "beparams/auto_balance", "invalid boolean"),
        ({"maxmem": "lots"}, "beparams/maxmem", "invalid size"),
        ({"memory": "lots"}, "beparams/memory", "invalid size"),
    ],
)
def test_parse_text_type_errors_name_the_parameter(
    raw: dict[str, str], field: str, fragment: str
) -> None:
    with pytest.raises(ParameterError, match=fragment) as ei:
        BE.parse_text(raw, "beparams")
    assert ei.value.field == field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"vcpus": "0"}, "beparams/vcpus"),
        ({"vcpus": "1025"}, "beparams/vcpus"),
        ({"spindle_use": "-1"}, "beparams/spindle_use"),
        ({"maxmem": "5T"}, "beparams/maxmem"),  # above the 4 TiB limit of maxmem
    ],
)
def test_parse_text_constraint_errors(raw: dict[str, str], field: str) -> None:
    with pytest.raises(ParameterError) as ei:
        BE.parse_text(raw, "beparams")
    assert ei.value.field == field
    assert ei.value.code is ECode.INVAL


def test_parse_text_constraint_message_states_the_bound() -> None:
    with pytest.raises(ParameterError, match=">= 1"):
        BE.parse_text({"vcpus": "0"}, "beparams")


# --- BE: check_overrides ---------------------------------------------------------------


def test_check_overrides_accepts_text_values() -> None:
    # Values from the CLI and RAPI arrive as text.
    out = BE.check_overrides(
        {"vcpus": "4", "memory": "2G", "auto_balance": "no", "spindle_use": "0"}, "beparams"
    )
    assert out == {
        "vcpus": 4,
        "maxmem": 2048,
        "minmem": 2048,
        "auto_balance": False,
        "spindle_use": 0,
    }


def test_check_overrides_accepts_typed_values() -> None:
    out = BE.check_overrides({"vcpus": 4, "maxmem": 2048, "auto_balance": False}, "beparams")
    assert out == {"vcpus": 4, "maxmem": 2048, "auto_balance": False}


def test_check_overrides_none_and_default_mean_remove() -> None:
    assert BE.check_overrides({"vcpus": None, "maxmem": "default"}, "beparams") == {
        "vcpus": None,
        "maxmem": None,
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"vcpus": 0}, "beparams/vcpus"),
        ({"vcpus": "0"}, "beparams/vcpus"),
        ({"vcpus": True}, "beparams/vcpus"),  # a bool is not a count
        ({"vcpus": 1.5}, "beparams/vcpus"),
        ({"vcpus": [1]}, "beparams/vcpus"),
        ({"auto_balance": 3}, "beparams/auto_balance"),
        ({"maxmem": "abc"}, "beparams/maxmem"),
        ({"nope": 1}, "beparams/nope"),
    ],
)
def test_check_overrides_rejects_bad_values(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ParameterError) as ei:
        BE.check_overrides(raw, "beparams")
    assert ei.value.field == field


def test_check_overrides_requires_a_mapping() -> None:
    with pytest.raises(ParameterError, match="expected a mapping") as ei:
        BE.check_overrides([("vcpus", 1)], "beparams")  # type: ignore[arg-type]
    assert ei.value.field == "beparams"


# --- fill: inheritance ------------------------------------------------------------------------


def test_fill_without_layers_gives_declared_defaults() -> None:
    assert BE.fill() == BeParams()
    assert BE.fill_dict() == BE.defaults()


def test_fill_inheritance_cluster_group_instance_later_wins() -> None:
    cluster = {"vcpus": 2, "maxmem": 256, "minmem": 256}
    group = {"vcpus": 4, "maxmem": 512}
    instance = {"vcpus": 8}
    filled = BE.fill(cluster, group, instance)
    assert filled.vcpus == 8  # instance wins
    assert filled.maxmem == 512  # group wins over cluster
    assert filled.minmem == 256  # only the cluster set it
    assert filled.auto_balance is True  # nobody set it: the default


def test_fill_none_means_not_set() -> None:
    filled = BE.fill({"vcpus": 2}, {"vcpus": None}, None, {"vcpus": None, "minmem": 64})
    assert filled.vcpus == 2
    assert filled.minmem == 64


def test_fill_rejects_unknown_stored_names() -> None:
    with pytest.raises(ParameterError) as ei:
        BE.fill({"bogus": 1})
    assert ei.value.field == "be"


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["vcpus", "spindle_use"]),
            st.none() | st.integers(min_value=1, max_value=64),
        ),
        max_size=4,
    )
)
def test_fill_property_last_non_none_wins(layers: list[dict[str, int | None]]) -> None:
    filled = BE.fill(*layers)
    for name in ("vcpus", "spindle_use"):
        expected = BE.defaults()[name]
        for layer in layers:
            if layer.get(name) is not None:
                expected = layer[name]
        assert getattr(filled, name) == expected


# --- NIC and disk groups -----------------------------------------------------------------------


@pytest.mark.parametrize("vlan", ["", ".10", ":20:30", ".10:20", "10", ".4095"])
def test_nic_vlan_accepts_ganeti_syntax(vlan: str) -> None:
    assert NIC.parse_text({"vlan": vlan}, "nicparams") == {"vlan": vlan}


@pytest.mark.parametrize("vlan", ["abc", ".12345", "10:", "..10", ".10.20", "1 0"])
def test_nic_vlan_rejects_other_text(vlan: str) -> None:
    with pytest.raises(ParameterError) as ei:
        NIC.check_overrides({"vlan": vlan}, "nicparams")
    assert ei.value.field == "nicparams/vlan"


def test_nic_mode_is_one_of_the_declared_values() -> None:
    assert NIC.parse_text({"mode": "routed"}, "nicparams") == {"mode": "routed"}
    with pytest.raises(ParameterError, match="bridged") as ei:
        NIC.parse_text({"mode": "bridge"}, "nicparams")
    assert ei.value.field == "nicparams/mode"
    with pytest.raises(ParameterError):
        NIC.check_overrides({"mode": "bridge"}, "nicparams")


def test_nic_fill_inherits() -> None:
    filled = NIC.fill({"link": "br1"}, {"mode": "routed"}, {"vlan": ".5"})
    assert (filled.mode, filled.link, filled.vlan) == ("routed", "br1", ".5")


def test_disk_group_known_templates() -> None:
    assert disk_group("file").fill({"preallocate": True}).preallocate is True
    assert disk_group("diskless").names() == []
    assert set(params.DISK_TEMPLATES) == {"diskless", "file", "sharedfile"}


def test_disk_group_unknown_template() -> None:
    with pytest.raises(ParameterError) as ei:
        disk_group("drbd", "diskparams")
    assert ei.value.field == "diskparams"
    assert "'drbd'" in str(ei.value)
    for tpl in params.DISK_TEMPLATES:
        assert tpl in str(ei.value)


def test_disk_group_diskless_has_no_parameters() -> None:
    with pytest.raises(ParameterError, match="unknown disk/diskless parameter"):
        disk_group("diskless").parse_text({"preallocate": "yes"}, "diskparams/diskless")


def test_doc_and_type_names_come_from_the_declaration() -> None:
    p = BE.params["maxmem"]
    assert p.doc == "Maximum memory (MiB)"
    assert p.type_name == "size (MiB)"
    assert BE.params["vcpus"].type_name == "integer"
    assert BE.params["auto_balance"].type_name == "boolean"
    assert NIC.params["mode"].type_name.startswith("one of bridged|")
