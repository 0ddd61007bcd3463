"""The -F query language and the filters it compiles to."""

from __future__ import annotations

from typing import Any

import pytest

from corral.cli import qlang
from corral.errors import ECode, ParameterError
from corral.query import UNAVAIL, compile_filter

# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name == "x"', ["=", "name", "x"]),
        ("name == 'x'", ["=", "name", "x"]),
        ('name=="x"', ["=", "name", "x"]),
        ("name != web1", ["!=", "name", "web1"]),  # a bare word is a string value
        ("pnode.group == default", ["=", "pnode.group", "default"]),
        ("be/memory >= 512", [">=", "be/memory", 512]),
        ("disk_usage < 1.5", ["<", "disk_usage", 1.5]),
        ("serial_no > -1", [">", "serial_no", -1]),
        ("serial_no <= 10", ["<=", "serial_no", 10]),
        ("admin_up == true", ["=", "admin_up", True]),
        ("admin_up == false", ["=", "admin_up", False]),
        ("admin_up", ["?", "admin_up"]),
        ('"web" in tags', ["=[]", "tags", "web"]),
        ("'role:db' in tags", ["=[]", "tags", "role:db"]),
        ("name =~ m/^web/", ["=~", "name", "^web"]),
        ("name =~ m|a/b|", ["=~", "name", "a/b"]),
        ("name =~ m/^WEB/i", ["=~", "name", "(?i)^WEB"]),
        (r'name == "say \"hi\""', ["=", "name", 'say "hi"']),
        ('nic.mac/0 == "aa:00:00:00:00:01"', ["=", "nic.mac/0", "aa:00:00:00:00:01"]),
    ],
)
def test_parse(text: str, expected: Any) -> None:
    assert qlang.parse(text) == expected


def test_and_binds_tighter_than_or() -> None:
    a, b, c = ["?", "a"], ["?", "b"], ["?", "c"]
    assert qlang.parse("a and b or c") == ["|", ["&", a, b], c]
    assert qlang.parse("a or b and c") == ["|", a, ["&", b, c]]
    assert qlang.parse("a and b and c") == ["&", a, b, c]
    assert qlang.parse("a or b or c") == ["|", a, b, c]


def test_not_and_parentheses() -> None:
    a, b, c = ["?", "a"], ["?", "b"], ["?", "c"]
    assert qlang.parse("not a") == ["!", a]
    assert qlang.parse("not a and b") == ["&", ["!", a], b]
    assert qlang.parse("not (a or b)") == ["!", ["|", a, b]]
    assert qlang.parse("(a or b) and c") == ["&", ["|", a, b], c]
    assert qlang.parse("not not a") == ["!", ["!", a]]
    assert qlang.parse("((a))") == a


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "(a",
        "a)",
        "(a or b",
        "a b",
        'name == "x" junk',
        "name ==",
        "name == (",
        "and",
        "a or",
        "not",
        '"x" in',
        '"x" in 5',
        '"x" tags',
        'name == "unterminated',
        "name $ 1",
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(ParameterError) as ei:
        qlang.parse(text)
    assert ei.value.field == "filter"
    assert ei.value.code is ECode.INVAL


def test_names_filter() -> None:
    assert qlang.names_filter(["a", "b"]) == ["|", ["=", "name", "a"], ["=", "name", "b"]]


# --- compiled filters on rows ---------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {
        "name": "web1",
        "tags": ["web", "prod"],
        "admin_up": True,
        "disk_usage": 1024,
        "oper_ram": 512,
    },
    {"name": "web2", "tags": ["web"], "admin_up": False, "disk_usage": 0, "oper_ram": None},
    {
        "name": "db1",
        "tags": ["db", "prod"],
        "admin_up": True,
        "disk_usage": 4096,
        "oper_ram": UNAVAIL,
    },
    {"name": "WEB3", "tags": [], "admin_up": False, "disk_usage": 10, "oper_ram": 256},
]


def select(text: str) -> list[str]:
    pred, _ = compile_filter("instance", qlang.parse(text))
    return [r["name"] for r in ROWS if pred(r.__getitem__)]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('name == "web1"', ["web1"]),
        ("name != web1", ["web2", "db1", "WEB3"]),
        ('"prod" in tags', ["web1", "db1"]),
        ('not "prod" in tags', ["web2", "WEB3"]),
        ("name =~ m/^web/", ["web1", "web2"]),
        ("name =~ m/^web/i", ["web1", "web2", "WEB3"]),
        ("admin_up", ["web1", "db1"]),
        ("not admin_up", ["web2", "WEB3"]),
        ("admin_up == false", ["web2", "WEB3"]),
        ("disk_usage > 100", ["web1", "db1"]),
        ("disk_usage >= 1024 and disk_usage <= 1024", ["web1"]),
        ("disk_usage < 11", ["web2", "WEB3"]),
        ('admin_up and "web" in tags or name == "WEB3"', ["web1", "WEB3"]),
        ('admin_up and ("web" in tags or name == "WEB3")', ["web1"]),
        # Missing or unavailable data never matches a comparison...
        ("oper_ram > 300", ["web1"]),
        ("oper_ram < 300", ["WEB3"]),
        # ...and counts as false for a truth test.
        ("oper_ram", ["web1", "WEB3"]),
        ("disk_usage", ["web1", "db1", "WEB3"]),
    ],
)
def test_filter_semantics(text: str, names: list[str]) -> None:
    assert select(text) == names


def test_compile_filter_reports_fields_used() -> None:
    _, used = compile_filter("instance", qlang.parse('admin_up and "x" in tags or name == "a"'))
    assert used == {"admin_up", "tags", "name"}
    pred, used = compile_filter("instance", None)
    assert used == set()
    assert pred(lambda f: None) is True


def test_type_mismatch_does_not_match_or_crash() -> None:
    assert select('disk_usage > "abc"') == []
    assert select("name < 5") == []
    assert select('"x" in name') == []  # not a list field


@pytest.mark.parametrize(
    "flt",
    [
        ["=", "no_such_field", 1],
        ["?", "no_such_field"],
        ["&", ["?", "admin_up"], ["=[]", "bogus", "x"]],
        ["=", 5, 1],
    ],
)
def test_unknown_field(flt: Any) -> None:
    with pytest.raises(ParameterError, match="unknown field") as ei:
        compile_filter("instance", flt)
    assert ei.value.field == "filter"


@pytest.mark.parametrize(
    ("flt", "fragment"),
    [
        (["~~", "name", "x"], "unknown filter operator"),
        (["=*", "name", "x"], "unknown filter operator"),
        ([], "invalid filter element"),
        ("name", "invalid filter element"),
        ([5, "name"], "invalid filter element"),
        (["!", ["?", "name"], ["?", "name"]], "exactly one"),
        (["?"], "exactly one"),
        (["=", "name"], "takes a field and a value"),
        (["=~", "name", "("], "invalid regular expression"),
    ],
)
def test_malformed_filters(flt: Any, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment) as ei:
        compile_filter("instance", flt)
    assert ei.value.code is ECode.INVAL


def test_parsed_filters_use_only_known_operators() -> None:
    # Everything the CLI can produce compiles.
    for op in ["==", "!=", "<", ">", "<=", ">="]:
        compile_filter("instance", qlang.parse(f"serial_no {op} 1"))
    for text in ["admin_up", "name =~ m/x/i", '"x" in tags', "not (admin_up or admin_up)"]:
        compile_filter("instance", qlang.parse(text))
