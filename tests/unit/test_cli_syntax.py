"""Ganeti's option syntax as the gnt-* commands split it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cli.common import (
    fields_option,
    format_unit,
    format_value,
    indexed_options,
    parse_hv_option,
    parse_ident_keyval,
    parse_keyval,
    split_escaped,
)
from corral.errors import ECode, ParameterError

# --- parse_keyval ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("memory=512M", {"memory": "512M"}),
        ("memory=512M,vcpus=2", {"memory": "512M", "vcpus": "2"}),
        ("no_auto_balance", {"auto_balance": "no"}),
        ("-vcpus", {"vcpus": "default"}),
        ("auto_balance", {"auto_balance": "yes"}),
        ("no_a,-b,c,d=4", {"a": "no", "b": "default", "c": "yes", "d": "4"}),
        (
            r"kernel_args=console=ttyS0\,115200,x=1",
            {"kernel_args": "console=ttyS0,115200", "x": "1"},
        ),
        ("x=a=b", {"x": "a=b"}),  # only the first '=' splits
        ("x=", {"x": ""}),
        ("kernel_path=/boot/vmlinuz-6.1", {"kernel_path": "/boot/vmlinuz-6.1"}),
        ("vlan=.10:20", {"vlan": ".10:20"}),
        ("no_x=1", {"no_x": "1"}),  # with '=', the name is taken literally
    ],
)
def test_parse_keyval(text: str, expected: dict[str, str]) -> None:
    assert parse_keyval(text, "beparams") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a=1,a=2", "given twice"),
        ("a,no_a", "given twice"),
        ("a=1,-a", "given twice"),
        ("a=1,,b=2", "empty element"),
        ("a=1,", "empty element"),
        ("=5", "invalid parameter name"),
        ("no_", "invalid parameter name"),
        ("-", "invalid parameter name"),
        ("a b=1", "invalid parameter name"),
        ("a;b=1", "invalid parameter name"),
    ],
)
def test_parse_keyval_errors(text: str, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment) as ei:
        parse_keyval(text, "beparams")
    assert ei.value.field == "beparams"
    assert ei.value.code is ECode.INVAL


def test_split_escaped() -> None:
    assert split_escaped(r"a\,b,c") == ["a,b", "c"]
    assert split_escaped(r"a\\,b") == ["a\\", "b"]
    assert split_escaped("a:b", ":") == ["a", "b"]
    assert split_escaped("") == [""]


_key = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda k: not k.startswith("no_")
)
_val = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=12)


@given(st.dictionaries(_key, _val, max_size=6))
def test_parse_keyval_round_trips_escaped_values(d: dict[str, str]) -> None:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(",", "\\,")

    text = ",".join(f"{k}={esc(v)}" for k, v in d.items())
    assert parse_keyval(text, "x") == d


# --- identifiers, hypervisors, indexes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:size=1G", ("0", {"size": "1G"})),
        ("add:size=1G,mode=ro", ("add", {"size": "1G", "mode": "ro"})),
        ("2:remove", ("2", {"remove": "yes"})),
        ("0", ("0", {})),
        ("1:", ("1", {})),
        ("0:link=br0,vlan=.10:20", ("0", {"link": "br0", "vlan": ".10:20"})),
    ],
)
def test_parse_ident_keyval(text: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_ident_keyval(text, "disk") == expected


def test_parse_ident_keyval_needs_an_identifier() -> None:
    with pytest.raises(ParameterError, match="missing identifier") as ei:
        parse_ident_keyval(":size=1G", "disk")
    assert ei.value.field == "disk"
    with pytest.raises(ParameterError, match="given twice"):
        parse_ident_keyval("0:size=1G,size=2G", "disk")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kvm:kernel_path=/x,acpi", ("kvm", {"kernel_path": "/x", "acpi": "yes"})),
        ("kvm", ("kvm", {})),
        ("fake:", ("fake", {})),
        ("kvm:-kernel_path", ("kvm", {"kernel_path": "default"})),
    ],
)
def test_parse_hv_option(text: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_hv_option(text) == expected


@pytest.mark.parametrize("text", [":a=1", "", "k-v:a=1", "k v", "kvm:a=1,a=2"])
def test_parse_hv_option_errors(text: str) -> None:
    with pytest.raises(ParameterError) as ei:
        parse_hv_option(text)
    assert ei.value.field == "hvparams"


def test_indexed_options_orders_by_index() -> None:
    assert indexed_options(["1:size=2G", "0:size=1G,mode=ro"], "disk") == [
        {"size": "1G", "mode": "ro"},
        {"size": "2G"},
    ]
    assert indexed_options([], "disk") == []
    assert indexed_options(["0"], "net") == [{}]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        (["0:size=1G", "2:size=1G"], "without gaps"),
        (["1:size=1G"], "without gaps"),
        (["0:size=1", "0:size=2"], "given twice"),
        (["x:size=1"], "invalid index"),
        (["add:size=1"], "invalid index"),
        (["-1:size=1"], "out of range"),
        (["65:size=1"], "out of range"),
    ],
)
def test_indexed_options_errors(values: list[str], fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment) as ei:
        indexed_options(values, "disk")
    assert ei.value.field == "disk"


@given(st.permutations(list(range(6))))
def test_indexed_options_any_order(order: list[int]) -> None:
    values = [f"{i}:size={i + 1}G" for i in order]
    assert indexed_options(values, "disk") == [{"size": f"{i + 1}G"} for i in range(6)]


# --- output -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mib", "units", "text"),
    [
        (0, "h", "0M"),
        (512, "h", "512M"),
        (1023, "h", "1023M"),
        (1024, "h", "1.0G"),
        (1536, "h", "1.5G"),
        (1024 * 1024, "h", "1.0T"),
        (2.5 * 1024 * 1024, "h", "2.5T"),
        (1536, "m", "1536"),
        (1536.7, "m", "1536"),
        (1536, "g", "1.5"),
        (512, "g", "0.5"),
        (1024 * 1024, "g", "1024.0"),
        (3 * 1024 * 1024, "t", "3.0"),
    ],
)
def test_format_unit(mib: float, units: str, text: str) -> None:
    assert format_unit(mib, units) == text


def test_format_value() -> None:
    assert format_value("bool", 0, True, "h") == "Y"
    assert format_value("bool", 0, False, "h") == "N"
    assert format_value("unit", 0, 2048, "h") == "2.0G"
    assert format_value("unit", 0, 2048, "m") == "2048"
    assert format_value("text", 0, None, "h") == "-"
    assert format_value("other", 0, ["a", None, 3], "h") == "a,-,3"
    assert format_value("text", 4, "x", "h") == "*"  # offline node
    assert format_value("text", 2, "x", "h") == "?"  # no data


def test_fields_option() -> None:
    default = ["name", "status"]
    assert fields_option(None, default) == ["name", "status"]
    assert fields_option("", default) == ["name", "status"]
    assert fields_option("+oper_ram,tags", default) == ["name", "status", "oper_ram", "tags"]
    assert fields_option("name,pnode", default) == ["name", "pnode"]
    assert fields_option("+", default) == ["name", "status"]
    assert fields_option("a,,b,", default) == ["a", "b"]
    assert default == ["name", "status"]  # never modified
    assert fields_option(None, default) is not default
