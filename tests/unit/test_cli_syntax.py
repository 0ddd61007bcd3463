"""Ganeti's option syntax as the gnt-* commands split it."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import opcodes
from corral.cli import common as cli_common
from corral.cli import gnt_instance, gnt_node
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
from corral.errors import ECode, OpExecError, ParameterError

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


# --- gnt-instance modify / grow-disk: the opcode the CLI builds -----------------------------

_UUID = "0b5e8c3a-2f4d-4e8a-9c1b-7d6e5f4a3b2c"
_MAC = "aa:00:00:12:34:56"


class _FakeClient:
    """Stands in for the master: validates each opcode as the master would, records it."""

    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.ops: list[dict[str, Any]] = []

    def submit_job(self, ops: list[dict[str, Any]]) -> int:
        for op in ops:
            opcodes.from_obj(op)  # raises ParameterError like the master's decoder
        self.ops.extend(ops)
        return 7

    def wait_for_job(self, job_id: int, feedback: Any = None) -> list[Any]:
        assert job_id == 7
        return [self.result]

    def close(self) -> None:
        pass


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _gnt_instance(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], result: Any = None, stdin: str | None = None
) -> tuple[int, _FakeClient]:
    fake = _FakeClient(result)
    monkeypatch.setattr(cli_common, "Client", lambda: fake)
    monkeypatch.setattr(sys, "stdin", _Tty(stdin) if stdin is not None else io.StringIO(""))
    return cli_common.run("gnt-instance", gnt_instance.COMMANDS, "test", argv), fake


def _only_op(fake: _FakeClient) -> dict[str, Any]:
    assert len(fake.ops) == 1
    return fake.ops[0]


@pytest.mark.parametrize(
    ("argv", "nics", "disks"),
    [
        (["--net", "add"], [["add", -1, {}]], None),
        (
            ["--net", f"add:mac={_MAC},mode=bridged,link=br0"],
            [["add", -1, {"mac": _MAC, "mode": "bridged", "link": "br0"}]],
            None,
        ),
        (
            ["--net", "1:add,link=br1,vlan=.10:20,name=eth-b"],
            [["add", 1, {"link": "br1", "vlan": ".10:20", "name": "eth-b"}]],
            None,
        ),
        (["--net", "0:modify,link=br1"], [["modify", 0, {"link": "br1"}]], None),
        (
            ["--net", "eth-a:modify,ip=198.51.100.7"],
            [["modify", "eth-a", {"ip": "198.51.100.7"}]],
            None,
        ),
        (["--net", "0:mode=routed"], [["modify", 0, {"mode": "routed"}]], None),  # legacy form
        (["--net", "1:modify"], [["modify", 1, {}]], None),  # plug it as configured
        (["-f", "--net", "2:remove"], [["remove", 2, {}]], None),
        (["-f", "--net", "remove"], [["remove", -1, {}]], None),
        (["-f", "--net=-1:remove"], [["remove", -1, {}]], None),
        (["-f", "--net", f"{_UUID}:remove"], [["remove", _UUID, {}]], None),
        (
            ["--disk", "add:size=1G,mode=ro,name=data"],
            None,
            [["add", -1, {"size": 1024, "mode": "ro", "name": "data"}]],
        ),
        (
            ["--disk", "1:add,size=512M,spindles=2"],
            None,
            [["add", 1, {"size": 512, "spindles": 2}]],
        ),
        (["--disk", "data:modify,mode=ro"], None, [["modify", "data", {"mode": "ro"}]]),
        (["--disk", "0:modify,name=root"], None, [["modify", 0, {"name": "root"}]]),
        (["-f", "--disk", f"{_UUID}:remove"], None, [["remove", _UUID, {}]]),
        (["-f", "--disk", "1:remove"], None, [["remove", 1, {}]]),
        (
            ["-f", "--net", "add", "--net", "0:remove", "--disk", "add:size=64"],
            [["add", -1, {}], ["remove", 0, {}]],
            [["add", -1, {"size": 64}]],
        ),
    ],
)
def test_modify_devices(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    nics: list[Any] | None,
    disks: list[Any] | None,
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["modify", *argv, "inst1"])
    assert rc == 0
    op = _only_op(fake)
    assert op["OP_ID"] == "OP_INSTANCE_SET_PARAMS"
    assert op["instance_name"] == "inst1"
    assert op.get("nics") == nics
    assert op.get("disks") == disks
    assert op["force"] == ("-f" in argv)
    assert "hotplug" not in op  # the cluster's default


def test_modify_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["modify", "-B", "memory=1G,vcpus=2", "-H", "kernel_path=", "-O", "flavour=x"]
    rc, fake = _gnt_instance(monkeypatch, [*argv, "--no-wait-for-sync", "inst1"])
    assert rc == 0
    op = _only_op(fake)
    assert op["beparams"] == {"memory": "1G", "vcpus": "2"}
    assert op["hvparams"] == {"kernel_path": ""}
    assert op["osparams"] == {"flavour": "x"}
    assert op["wait_for_sync"] is False
    assert "nics" not in op and "disks" not in op


@pytest.mark.parametrize(
    ("flag", "hotplug", "if_possible"),
    [
        (None, None, False),
        ("--hotplug", True, False),
        ("--no-hotplug", False, False),
        ("--hotplug-if-possible", None, True),
    ],
)
def test_modify_hotplug_flags(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, hotplug: bool | None, if_possible: bool
) -> None:
    argv = ["modify", "--net", "add", *([flag] if flag else []), "inst1"]
    rc, fake = _gnt_instance(monkeypatch, argv)
    assert rc == 0
    decoded = opcodes.from_obj(_only_op(fake))
    assert isinstance(decoded, opcodes.OpInstanceSetParams)
    assert decoded.hotplug is hotplug
    assert decoded.hotplug_if_possible is if_possible


@pytest.mark.parametrize(
    "flags",
    [
        ["--hotplug", "--no-hotplug"],
        ["--hotplug", "--hotplug-if-possible"],
        ["--no-hotplug", "--hotplug-if-possible"],
    ],
)
def test_modify_hotplug_flags_exclusive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    with pytest.raises(SystemExit) as ei:
        _gnt_instance(monkeypatch, ["modify", "--net", "add", *flags, "inst1"])
    assert ei.value.code == ECode.INVAL.exit_code
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--net", "add:colour=red"], ["--net", "colour", "known: ip, link, mac"]),
        (["--net", "0:modify,size=1G"], ["--net", "size"]),
        (["--disk", "0:modify,size=2G"], ["--disk", "size", "known: mode, name"]),
        (["--disk", "add:size=1G,vg=xenvg"], ["--disk", "vg"]),
        (["--disk", "add:mode=ro"], ["--disk", "missing size"]),
        (["--disk", "add:size=lots"], ["invalid size"]),
        (["--disk", "add:size=1G,spindles=two"], ["spindles", "integer"]),
        (["--net", "0:remove,link=br0"], ["--net", "remove takes no parameters"]),
        (["--disk", "data:remove,mode=ro"], ["--disk", "remove takes no parameters"]),
        (["--net", "eth-a:add"], ["add needs an index"]),
        (["--net", "0:add,remove"], ["only one of add, remove, modify"]),
        (["--net", "add:remove"], ["combined with"]),
        (["--net", "modify:link=br0"], ["modify needs an identifier"]),
        (["--net", "0:add=1"], ["'add' takes no value"]),
        (["--net", f"mac={_MAC}"], ["--net", "missing identifier"]),
        (["--net", "0,link=br0"], ["missing ':'"]),
        (["--net=-2:remove"], ["invalid index -2"]),
        ([], ["nothing to change"]),
        (["-B", ""], ["nothing to change"]),
    ],
)
def test_modify_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragments: list[str],
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["modify", "-f", *argv, "inst1"])
    err = capsys.readouterr().err
    assert rc == ECode.INVAL.exit_code, err
    assert fake.ops == []
    assert err.startswith("Failure: ")
    for f in fragments:
        assert f in err


@pytest.mark.parametrize(
    ("option", "value", "fragments"),
    [
        ("--net", "1:remove", ["remove nic 1 of instance inst1", "loses this network interface"]),
        ("--net", "remove", ["remove the last nic of instance inst1"]),
        ("--disk", "data:remove", ["remove disk 'data' of instance inst1", "ALL ITS DATA"]),
        ("--net", f"0:modify,mac={_MAC}", ["MAC address of nic 0", "removing the NIC"]),
    ],
)
def test_modify_declined_prompt_submits_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    fragments: list[str],
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["modify", option, value, "inst1"], stdin="n\n")
    assert rc != 0
    assert fake.ops == []
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err
    assert "Continue? y/[n]" in err


def test_modify_prompt_accepted_or_forced(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["modify", "--net", "1:remove", "--disk", "0:remove", "inst1"]
    rc, fake = _gnt_instance(monkeypatch, argv, stdin="y\n")
    assert rc == 0
    assert _only_op(fake)["force"] is False
    err = capsys.readouterr().err
    assert err.count("Continue?") == 1  # one question for all the risky changes
    assert "nic 1" in err and "disk 0" in err
    # --force: no question (stdin is no terminal here: asking would refuse), passed on.
    rc, fake = _gnt_instance(monkeypatch, ["modify", "-f", *argv[1:]])
    assert rc == 0
    assert _only_op(fake)["force"] is True
    assert "Continue?" not in capsys.readouterr().err


def test_modify_without_terminal_refuses_risky_changes_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["modify", "--net", "0:remove", "inst1"])
    assert rc == ECode.INVAL.exit_code
    assert fake.ops == []
    assert "Refusing without --force" in capsys.readouterr().err
    # Re-linking or adding needs no confirmation; a dry run changes nothing, so no question.
    for argv in (["--net", "0:modify,link=br1"], ["--disk", "add:size=1G"]):
        rc, fake = _gnt_instance(monkeypatch, ["modify", *argv, "inst1"])
        assert rc == 0 and len(fake.ops) == 1
    rc, fake = _gnt_instance(monkeypatch, ["modify", "--dry-run", "--net", "0:remove", "inst1"])
    assert rc == 0 and _only_op(fake)["dry_run"] is True
    assert "nothing was changed" in capsys.readouterr().out


_NOTE = "take effect only at the next (re)start"


@pytest.mark.parametrize(
    ("flags", "result", "lines", "note"),
    [
        (
            [],
            [["nic.1", f"add:mac={_MAC},mode=bridged,link=br0"], ["nic.1", "hotplug:done"]],
            [f" - nic.1 -> add:mac={_MAC},mode=bridged,link=br0", " - nic.1 -> hotplug:done"],
            False,
        ),
        ([], [["nic.1", "add:mode=bridged"], ["nic.1", "hotplug:done (nic-1 at 0x1e)"]], [], False),
        ([], [["nic.1", "add:mode=bridged"], ["nic.1", "hotplug:deferred"]], [], True),
        ([], [["nic.1", "add:mode=bridged"], ["nic.1", "hotplug:failed"]], [], True),
        (["--no-hotplug"], [["nic.1", "add:mode=bridged"]], [" - nic.1 -> add:mode=bridged"], True),
        (
            ["-f"],
            [["disk/1", "remove"], ["disk/1", "hotplug:done"]],
            [" - disk/1 -> remove"],
            False,
        ),
        ([], [["be/memory", "1024"]], [" - be/memory -> 1024"], True),
    ],
)
def test_modify_output(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    result: list[list[str]],
    lines: list[str],
    note: bool,
) -> None:
    rc, _ = _gnt_instance(monkeypatch, ["modify", *flags, "--net", "add", "inst1"], result)
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Modified instance inst1"
    assert out[1 : 1 + len(result)] == [f" - {p:<5} -> {c}" for p, c in result]
    for line in lines:
        assert line in out
    assert any(_NOTE in line for line in out) is note


def test_modify_output_unchanged_and_submit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = _gnt_instance(monkeypatch, ["modify", "-B", "memory=1G", "inst1"], [])
    assert rc == 0
    assert capsys.readouterr().out == "Not modified instance inst1\n"
    rc, fake = _gnt_instance(monkeypatch, ["modify", "--submit", "--net", "add", "inst1"])
    assert rc == 0 and len(fake.ops) == 1
    assert capsys.readouterr().out == "JobID: 7\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["inst1", "0", "1G"],
            {"disk": 0, "amount": 1024, "absolute": False, "wait_for_sync": True},
        ),
        (["inst1", "1", "512"], {"disk": 1, "amount": 512}),
        (["--absolute", "inst1", "2", "2.5G"], {"disk": 2, "amount": 2560, "absolute": True}),
        (
            ["--no-wait-for-sync", "inst1", "0", "1T"],
            {"amount": 1024 * 1024, "wait_for_sync": False},
        ),
    ],
)
def test_grow_disk(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict[str, Any]
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["grow-disk", *argv])
    assert rc == 0
    op = _only_op(fake)
    assert op["OP_ID"] == "OP_INSTANCE_GROW_DISK"
    assert op["instance_name"] == "inst1"
    assert {k: op[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["inst1", "data", "1G"], "invalid disk index 'data'"),
        (["inst1", "-1", "1G"], "invalid disk index"),
        (["inst1", "0", "1X"], "invalid size"),
        (["inst1", "0", "0"], "size must be positive"),
        (["inst1", "16", "1G"], "disk"),  # the opcode's own limit, checked as the master would
    ],
)
def test_grow_disk_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["grow-disk", *argv])
    err = capsys.readouterr().err
    assert rc == ECode.INVAL.exit_code, err
    assert fake.ops == []
    assert fragment in err


# --- gnt-instance migrate / failover, gnt-node migrate / evacuate ---------------------------

_MIGRATE_Q = (
    "Instance inst1 will be migrated. Note that migration might impact the instance if "
    "anything goes wrong (e.g. due to bugs in the hypervisor). Continue? y/[n]"
)
_CLEANUP_Q = (
    "Instance inst1 will be recovered from a failed migration. Note that the migration "
    "procedure (including cleanup) might impact the instance if anything goes wrong"
)
_FAILOVER_Q = (
    "Failover will happen to image inst1. This requires a shutdown of the instance. Continue? y/[n]"
)
_OFFLINE_Q = (
    "To failover instance inst1, the source node must be marked offline first. "
    "Is this already the case? y/[n]"
)


@pytest.mark.parametrize(
    ("argv", "expected", "absent"),
    [
        (
            [],
            {
                "cleanup": False,
                "allow_failover": False,
                "ignore_ipolicy": False,
                "allow_runtime_changes": True,
            },
            ["mode", "live", "target_node", "iallocator"],
        ),
        (["--non-live"], {"mode": "non-live"}, ["live"]),
        (["--migration-mode=live"], {"mode": "live"}, []),
        (["--migration-mode", "non-live"], {"mode": "non-live"}, []),
        (["-n", "node2"], {"target_node": "node2"}, ["iallocator"]),
        (["--target-node", "node2"], {"target_node": "node2"}, []),
        (["-I", "hail"], {"iallocator": "hail"}, ["target_node"]),
        (
            ["--allow-failover", "--ignore-ipolicy", "--no-runtime-changes"],
            {"allow_failover": True, "ignore_ipolicy": True, "allow_runtime_changes": False},
            [],
        ),
        (["--cleanup"], {"cleanup": True}, ["target_node", "mode"]),
        (["--cleanup", "--non-live"], {"cleanup": True, "mode": "non-live"}, []),
        (["--priority", "high"], {"priority": -10}, []),
    ],
)
def test_migrate_opcode(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict[str, Any], absent: list[str]
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["migrate", "-f", *argv, "inst1"])
    assert rc == 0
    op = _only_op(fake)
    assert op["OP_ID"] == "OP_INSTANCE_MIGRATE"
    assert op["instance_name"] == "inst1"
    assert {k: op[k] for k in expected} == expected
    assert not set(absent) & set(op)
    assert isinstance(opcodes.from_obj(op), opcodes.OpInstanceMigrate)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--non-live", "--migration-mode=live"], "Only one of the --non-live and --migration"),
        (["--non-live", "--migration-mode=non-live"], "Only one of the --non-live"),
        (["-n", "node2", "-I", "hail"], "Specify either an iallocator (-I), or a target node"),
        (["--cleanup", "-n", "node2"], "--cleanup cannot be combined with -n/--target-node"),
        (["--cleanup", "-I", "hail"], "--cleanup cannot be combined with -I/--iallocator"),
        (["--cleanup", "--allow-failover"], "--cleanup cannot be combined with --allow-failover"),
        (["-n", "no such node"], "target_node"),  # the opcode's check, as the master does it
    ],
)
def test_migrate_bad_combinations(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    # Without -f and with a terminal that would say yes: refused all the same.
    rc, fake = _gnt_instance(monkeypatch, ["migrate", *argv, "inst1"], stdin="y\n")
    err = capsys.readouterr().err
    assert rc == ECode.INVAL.exit_code, err
    assert fake.ops == []
    assert f"Failure: {fragment}" in err
    # The CLI's own checks come before the question; the opcode's are the master's.
    assert ("Continue?" in err) is (fragment == "target_node")


@pytest.mark.parametrize(
    "argv", [["--migration-mode=fast"], ["--live"], ["-n"], ["inst2"], ["--shutdown-timeout=1"]]
)
def test_migrate_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as ei:
        _gnt_instance(monkeypatch, ["migrate", "-f", *argv, "inst1"])
    assert ei.value.code == ECode.INVAL.exit_code
    assert "usage error" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "question"), [([], _MIGRATE_Q), (["--cleanup"], _CLEANUP_Q)])
def test_migrate_asks_ganetis_question(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    question: str,
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["migrate", *flags, "inst1"], stdin="n\n")
    assert rc == 1 and fake.ops == []
    assert question in capsys.readouterr().err
    rc, fake = _gnt_instance(monkeypatch, ["migrate", *flags, "inst1"], stdin="y\n")
    assert rc == 0 and _only_op(fake)["cleanup"] is bool(flags)
    assert question in capsys.readouterr().err
    # No terminal and no -f: refused, nothing submitted; -f or --dry-run: no question.
    rc, fake = _gnt_instance(monkeypatch, ["migrate", *flags, "inst1"])
    assert rc == ECode.INVAL.exit_code and fake.ops == []
    assert "Refusing without --force" in capsys.readouterr().err
    for extra in (["-f"], ["--dry-run"]):
        rc, fake = _gnt_instance(monkeypatch, ["migrate", *extra, *flags, "inst1"])
        assert rc == 0 and len(fake.ops) == 1
        assert "Continue?" not in capsys.readouterr().err
    assert fake.ops[0]["dry_run"] is True


def test_migrate_submit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["migrate", "-f", "--submit", "inst1"])
    assert rc == 0 and len(fake.ops) == 1
    assert capsys.readouterr().out == "JobID: 7\n"


@pytest.mark.parametrize(
    ("argv", "expected", "absent"),
    [
        (
            [],
            {"ignore_consistency": False, "shutdown_timeout": 120.0, "ignore_ipolicy": False},
            ["target_node", "iallocator"],
        ),
        (
            ["--ignore-consistency", "--shutdown-timeout", "30", "-n", "node3"],
            {"ignore_consistency": True, "shutdown_timeout": 30.0, "target_node": "node3"},
            ["iallocator"],
        ),
        (["-I", "hail", "--ignore-ipolicy"], {"iallocator": "hail", "ignore_ipolicy": True}, []),
    ],
)
def test_failover_opcode(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict[str, Any], absent: list[str]
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["failover", "-f", *argv, "inst1"])
    assert rc == 0
    op = _only_op(fake)
    assert op["OP_ID"] == "OP_INSTANCE_FAILOVER" and op["instance_name"] == "inst1"
    assert {k: op[k] for k in expected} == expected
    assert not set(absent) & set(op)


def test_failover_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["failover", "-f", "-n", "node2", "-I", "x", "inst1"])
    assert rc == ECode.INVAL.exit_code and fake.ops == []
    assert "Specify either an iallocator (-I), or a target node (-n)" in capsys.readouterr().err
    rc, fake = _gnt_instance(monkeypatch, ["failover", "-f", "--shutdown-timeout=-5", "inst1"])
    assert rc == ECode.INVAL.exit_code and fake.ops == []
    assert "shutdown_timeout" in capsys.readouterr().err
    for bad in (["--shutdown-timeout=soon"], ["--cleanup"], ["--non-live"]):
        with pytest.raises(SystemExit) as ei:
            _gnt_instance(monkeypatch, ["failover", "-f", *bad, "inst1"])
        assert ei.value.code == ECode.INVAL.exit_code


@pytest.mark.parametrize(
    ("flags", "answers", "asked", "submitted"),
    [
        ([], "n\n", [_FAILOVER_Q], False),
        ([], "y\n", [_FAILOVER_Q], True),
        (["--ignore-consistency"], "y\nn\n", [_FAILOVER_Q, _OFFLINE_Q], False),
        (["--ignore-consistency"], "y\ny\n", [_FAILOVER_Q, _OFFLINE_Q], True),
        (["--ignore-consistency"], "n\n", [_FAILOVER_Q], False),
    ],
)
def test_failover_asks_ganetis_questions(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    answers: str,
    asked: list[str],
    submitted: bool,
) -> None:
    rc, fake = _gnt_instance(monkeypatch, ["failover", *flags, "inst1"], stdin=answers)
    err = capsys.readouterr().err
    assert [q for q in (_FAILOVER_Q, _OFFLINE_Q) if q in err] == asked
    assert (rc == 0) is submitted
    assert len(fake.ops) == int(submitted)
    rc, fake = _gnt_instance(monkeypatch, ["failover", "-f", *flags, "inst1"])
    assert rc == 0 and len(fake.ops) == 1
    assert "?" not in capsys.readouterr().err


class _NodeFakeClient(_FakeClient):
    """A master with nodes: the query of a node's instances, jobs an opcode generated."""

    def __init__(
        self,
        result: Any,
        lists: dict[str, list[str]],
        failing: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(result)
        self.lists = lists
        self.failing = failing
        self.queried: list[list[str]] = []
        self.waited: list[int] = []

    def query(
        self, what: str, fields: list[str], qfilter: Any = None, names: list[str] | None = None
    ) -> dict[str, Any]:
        assert what == "node" and names == ["node1"]
        self.queried.append(fields)
        return {"fields": [], "data": [[[0, self.lists.get(f, [])] for f in fields]]}

    def wait_for_job(self, job_id: int, feedback: Any = None) -> list[Any]:
        if job_id == 7:
            return [self.result]
        self.waited.append(job_id)
        if job_id in self.failing:
            raise OpExecError(f"migration of the instance in job {job_id} failed")
        return [None]


def _gnt_node(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    lists: dict[str, list[str]],
    result: Any = None,
    stdin: str | None = None,
    failing: frozenset[int] = frozenset(),
) -> tuple[int, _NodeFakeClient]:
    fake = _NodeFakeClient(result, lists, failing)
    monkeypatch.setattr(cli_common, "Client", lambda: fake)
    monkeypatch.setattr(sys, "stdin", _Tty(stdin) if stdin is not None else io.StringIO(""))
    return cli_common.run("gnt-node", gnt_node.COMMANDS, "test", argv), fake


_PINST = {"pinst_list": ["inst10", "inst2"], "sinst_list": ["inst3"]}
_JOBS = {"jobs": [[True, 8], [True, 9]]}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"ignore_ipolicy": False}),
        (["--non-live"], {"mode": "non-live"}),
        (["--migration-mode=live", "-n", "node2"], {"mode": "live", "target_node": "node2"}),
        (["-I", "hail", "--ignore-ipolicy"], {"iallocator": "hail", "ignore_ipolicy": True}),
    ],
)
def test_node_migrate(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: dict[str, Any],
) -> None:
    rc, fake = _gnt_node(monkeypatch, ["migrate", *argv, "node1"], _PINST, _JOBS, stdin="y\n")
    out, err = capsys.readouterr()
    assert rc == 0
    assert "Migrate instance(s) inst2, inst10? y/[n]" in err
    op = _only_op(fake)
    assert op["OP_ID"] == "OP_NODE_MIGRATE" and op["node_name"] == "node1"
    assert {k: op[k] for k in expected} == expected
    assert fake.queried == [["pinst_list"]]
    assert fake.waited == [8, 9]  # every job the opcode generated
    assert out.splitlines()[-1] == "All instances migrated successfully."


def test_node_migrate_reports_failed_jobs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {"jobs": [[True, 8], [False, "cannot submit"], [True, 9], [True, 10]]}
    rc, fake = _gnt_node(
        monkeypatch, ["migrate", "-f", "node1"], _PINST, result, failing=frozenset({9})
    )
    out, err = capsys.readouterr()
    assert rc == 1
    assert fake.waited == [8, 9, 10]  # a failure does not stop the wait for the others
    assert "Job 9 has failed: migration of the instance in job 9 failed" in err
    assert "cannot submit" in err
    assert out.splitlines()[-1] == "There were 2 errors during the node migration."


def test_node_migrate_nothing_declined_or_bad(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, fake = _gnt_node(monkeypatch, ["migrate", "node1"], {})
    assert rc == 0 and fake.ops == []
    assert capsys.readouterr().out == "No primary instances on node node1, exiting.\n"
    rc, fake = _gnt_node(monkeypatch, ["migrate", "node1"], _PINST, stdin="n\n")
    assert rc == 1 and fake.ops == []
    rc, fake = _gnt_node(monkeypatch, ["migrate", "node1"], _PINST)  # no terminal
    assert rc == ECode.INVAL.exit_code and fake.ops == []
    capsys.readouterr()
    for bad in (["--non-live", "--migration-mode=non-live"], ["-n", "node2", "-I", "hail"]):
        rc, fake = _gnt_node(monkeypatch, ["migrate", "-f", *bad, "node1"], _PINST)
        assert rc == ECode.INVAL.exit_code and fake.ops == [] and fake.queried == []
        assert capsys.readouterr().err.startswith("Failure: ")
    rc, fake = _gnt_node(monkeypatch, ["migrate", "-f", "--submit", "node1"], _PINST, _JOBS)
    assert rc == 0 and len(fake.ops) == 1 and fake.waited == []
    assert capsys.readouterr().out == "JobID: 7\n"


@pytest.mark.parametrize(
    ("argv", "mode", "fields", "instances", "extra"),
    [
        ([], "all", ["pinst_list", "sinst_list"], "inst2, inst3, inst10", {}),
        (["-p"], "primary-only", ["pinst_list"], "inst2, inst10", {}),
        (
            ["--primary-only", "-I", "hail"],
            "primary-only",
            ["pinst_list"],
            "",
            {"iallocator": "hail"},
        ),
        (["-s"], "secondary-only", ["sinst_list"], "inst3", {}),
        (["--secondary-only"], "secondary-only", ["sinst_list"], "inst3", {}),
        (
            ["-n", "node3", "--early-release"],
            "secondary-only",
            ["sinst_list"],
            "inst3",
            {"remote_node": "node3", "early_release": True},
        ),
        (["--new-secondary", "node3", "-s"], "secondary-only", ["sinst_list"], "", {}),
    ],
)
def test_node_evacuate(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    mode: str,
    fields: list[str],
    instances: str,
    extra: dict[str, Any],
) -> None:
    rc, fake = _gnt_node(monkeypatch, ["evacuate", *argv, "node1"], _PINST, _JOBS, stdin="y\n")
    out, err = capsys.readouterr()
    assert rc == 0, err
    op = _only_op(fake)
    assert op["OP_ID"] == "OP_NODE_EVACUATE" and op["node_name"] == "node1"
    assert op["mode"] == mode
    assert {k: op[k] for k in extra} == extra
    assert isinstance(opcodes.from_obj(op), opcodes.OpNodeEvacuate)
    assert fake.queried == [fields]
    if instances:
        assert f"Relocate instance(s) {instances} from node(s) node1? y/[n]" in err
    # -n alone switches to secondary instances, and says so (as Ganeti does).
    assert ("hence evacuating secondary instances only" in err) is (argv[:1] == ["-n"])
    assert fake.waited == [8, 9]
    assert out.splitlines()[-1] == "All instances evacuated successfully."


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-p", "-s"], "Only one of the --primary-only and --secondary-only"),
        (["-p", "-n", "node3"], "cannot be combined with --primary-only"),
        (["-n", "node3", "-I", "hail"], "Specify either an iallocator (-I)"),
        (["-n", "bad node"], "remote_node"),
    ],
)
def test_node_evacuate_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    rc, fake = _gnt_node(monkeypatch, ["evacuate", "-f", *argv, "node1"], _PINST, _JOBS)
    err = capsys.readouterr().err
    assert rc == ECode.INVAL.exit_code, err
    assert fake.ops == [] and fake.waited == []
    assert fragment in err


def test_node_evacuate_nothing_or_declined(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, fake = _gnt_node(monkeypatch, ["evacuate", "-p", "node1"], {"sinst_list": ["inst3"]})
    assert rc == 0 and fake.ops == []
    assert "No instances to evacuate on node(s) node1, exiting." in capsys.readouterr().err
    rc, fake = _gnt_node(monkeypatch, ["evacuate", "node1"], _PINST, stdin="n\n")
    assert rc == 1 and fake.ops == []
    rc, fake = _gnt_node(
        monkeypatch,
        ["evacuate", "-f", "node1"],
        _PINST,
        {"jobs": [[True, 8]]},
        failing=frozenset({8}),
    )
    assert rc == 1
    assert capsys.readouterr().out.splitlines()[-1] == "There were 1 errors during the evacuation."
