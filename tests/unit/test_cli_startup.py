"""What a ``gnt-*`` command loads before it talks to the master.

Every command (a hotplug ``gnt-instance modify`` included) pays for its
imports at each run, so the heavy ones stay out of the common path: asyncio
(and the ssl it pulls in) and aiohttp only for ``gnt-instance console``,
msgspec (and typing_extensions) only on the master's side of LUXI. The
everyday commands go further: no typing, no pathlib (with urllib.parse and
ipaddress) and no terminal handling, ~12 ms of a 50 ms ``gnt-instance
migrate`` start. Checked in a fresh interpreter through ``sys.modules``; no
timing.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from typing import Any

import msgspec
import pytest

from corral import luxi
from corral.cli import common, gnt_cluster, gnt_debug, gnt_instance, gnt_job, gnt_node, gnt_os
from corral.errors import ProtocolError

HEAVY = (
    "asyncio",
    "ssl",
    "aiohttp",
    "cryptography",
    "msgspec",
    "typing_extensions",
    "dataclasses",
)

PROGRAMS = {
    "gnt-cluster": gnt_cluster.COMMANDS,
    "gnt-node": gnt_node.COMMANDS,
    "gnt-instance": gnt_instance.COMMANDS,
    "gnt-job": gnt_job.COMMANDS,
    "gnt-os": gnt_os.COMMANDS,
    "gnt-debug": gnt_debug.COMMANDS,
}

# Up to the point where a command would connect: its program's imports, the
# parser for its argv, a size as modify reads it, a LUXI request and a reply
# through the client's codec.
# One interpreter for all of them: what none of them may load, their union may not.
RUNS = [
    ("gnt_instance", ["list"]),
    ("gnt_instance", ["modify", "--net", "add", "inst1"]),
    ("gnt_instance", ["modify", "--disk", "add:size=8M", "inst1"]),
    ("gnt_instance", ["grow-disk", "inst1", "1", "8M"]),
    ("gnt_instance", ["console", "inst1"]),
    ("gnt_cluster", ["getmaster"]),
    ("gnt_node", ["list"]),
    ("gnt_job", ["list"]),
    ("gnt_os", ["list"]),
    ("gnt_debug", ["delay", "1"]),
]
_PROBE = """
import importlib, sys
from corral import luxi
from corral.cli import common
for module, argv in {runs!r}:
    commands = importlib.import_module("corral.cli." + module).COMMANDS
    common.build_parser("prog", commands, "d", argv).parse_args(argv)
common.parse_size_text("8M", "size")  # --disk add:size=8M, grow-disk … 8M
luxi.encode_request("Query", ["instance", ["name"], None, None])
luxi.decode_reply(b'{{"success":true,"result":{{"fields":[],"data":[]}}}}')
print("\\n".join(sys.modules))
"""


# Commands an admin or a script runs all day: beyond HEAVY, these stay out too.
LEAN = ("typing", "pathlib", "urllib", "termios", "tty")
EVERYDAY = [
    ("gnt_instance", ["list"]),
    ("gnt_instance", ["info", "inst1"]),
    ("gnt_instance", ["startup", "inst1"]),
    ("gnt_instance", ["shutdown", "inst1"]),
    ("gnt_instance", ["migrate", "-f", "inst1"]),
    ("gnt_instance", ["failover", "-f", "inst1"]),
    ("gnt_instance", ["modify", "--net", "add", "inst1"]),
    ("gnt_instance", ["modify", "--disk", "add:size=8M", "inst1"]),
    ("gnt_cluster", ["getmaster"]),
    ("gnt_cluster", ["verify"]),
    ("gnt_node", ["list"]),
    ("gnt_node", ["migrate", "-f", "node1"]),
    ("gnt_job", ["list"]),
    ("gnt_os", ["list"]),
]


def _run_loaded(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(proc.stdout.split())


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in HEAVY)


def test_command_start_up_loads_nothing_heavy() -> None:
    loaded = _run_loaded(_PROBE.format(runs=RUNS))
    assert {f"corral.cli.{m}" for m, _ in RUNS} <= loaded  # the probe did run them
    assert _heavy(loaded) == []


def test_everyday_commands_load_neither_typing_nor_pathlib() -> None:
    loaded = _run_loaded(_PROBE.format(runs=EVERYDAY))
    assert "corral.cli.modify" in loaded  # the probe did reach modify's parser
    assert sorted(m for m in loaded if m.split(".")[0] in LEAN) == []


def test_modules_of_other_commands_load_when_they_run() -> None:
    loaded = _run_loaded(_PROBE.format(runs=[("gnt_instance", ["migrate", "-f", "inst1"])]))
    assert not loaded & {"corral.cli.console", "corral.cli.modify", "corral.cli.reinstall"}


def test_corral_entry_point_imports_only_the_group_asked_for() -> None:
    code = (
        "import sys\n"
        "from corral.cli import main\n"
        "try:\n"
        "    main.main(['job', 'list', '--bogus'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sys.modules))\n"
    )
    loaded = _run_loaded(code)
    assert "corral.cli.gnt_job" in loaded
    assert not loaded & {f"corral.cli.gnt_{g}" for g in ("cluster", "node", "instance", "os")}
    assert _heavy(loaded) == []


# --- the parser built for one command is the one built for all -----------------------------


def _outcome(parser: common._Parser, argv: list[str]) -> tuple[Any, ...]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            ns = vars(parser.parse_args(argv))
    except SystemExit as exit_:
        return ("exit", exit_.code, out.getvalue(), err.getvalue())
    return ("ok", {k: getattr(v, "__qualname__", v) for k, v in ns.items()})


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_parser_for_named_command_behaves_like_the_full_one(prog: str) -> None:
    commands = PROGRAMS[prog]
    argvs = [[], ["-h"], ["-d"], ["nosuchcommand"], ["-d", "--help", "list"]]
    for c in commands:
        for word in (c.name, *c.aliases):
            argvs += [[word, "--help"], ["-d", word], [word, "x", "--no-such-option"]]
    full = common.build_parser(prog, commands, "d")  # parsing leaves a parser as it was
    for argv in argvs:
        named = common.build_parser(prog, commands, "d", argv)
        assert _outcome(named, argv) == _outcome(full, argv), argv


# --- LUXI: the client's codec (stdlib json) against the master's (msgspec) -----------------


class _Nic(msgspec.Struct):
    mac: str
    tags: set[str]


def test_request_reaches_the_master_as_msgspec_would_send_it() -> None:
    args: list[Any] = [[{"OP_ID": "OP_X", "name": "ü", "n": 2**40, "f": 0.5, "t": (1, 2)}]]
    args.append([_Nic("aa:00:00:00:00:01", {"x"}), {3: None}, b"\x00"])
    req = luxi.decode_request(luxi.encode_request("SubmitJob", args)[:-1])
    assert req.method == "SubmitJob"
    assert req.version == luxi.LUXI_VERSION
    assert req.args == msgspec.json.decode(msgspec.json.encode(args))
    assert luxi.ETX not in luxi.encode_request("X", ["\x03"])[:-1]


def test_reply_from_the_master_decodes() -> None:
    result = {"fields": [{"name": "name"}], "data": [[[0, "inst1"]]], "nic": _Nic("m", set())}
    reply = luxi.decode_reply(luxi.encode_reply(True, result)[:-1])
    assert reply.success is True
    assert reply.result == msgspec.json.decode(msgspec.json.encode(result))
    failed = luxi.decode_reply(b'{"success":false,"extra":1}')
    assert (failed.success, failed.result) == (False, None)


@pytest.mark.parametrize(
    "data",
    [b"", b"null", b"[1]", b'{"result":1}', b'{"success":1}', b"\xff", b'{"success":true,"x":NaN}'],
)
def test_malformed_reply_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed LUXI reply"):
        luxi.decode_reply(data)
