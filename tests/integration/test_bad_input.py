"""Bad input, end to end against a real master daemon.

Every ``gnt-*`` command given an unknown object, an unknown field or a
malformed value exits non-zero with one ``Failure: <reason> [<code>]`` line
naming the problem, and changes nothing (config and disk images are as
before; failed jobs still get an id in the queue, which is expected). A
malformed request on the LUXI socket gets an error reply, and the daemon
keeps serving. The opcode decoder never raises anything but a CorralError.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from corral import luxi, opcodes
from corral.errors import CorralError, ECode
from corral.testing.cluster import TempCluster

INST1_MAC = "aa:00:00:11:22:33"
FAILURE_RE = re.compile(r"^Failure: (?P<msg>.+) \[(?P<code>[a-z_]+)\]$")


@pytest.fixture(scope="module")
def bad_cluster() -> Iterator[TempCluster]:
    """One cluster for all cases: inst1 (running, a file disk, a fixed MAC), inst2 (down)."""
    with TempCluster(prefix="corral-bad-input-") as c:
        c.run(
            "gnt-instance",
            "add",
            "-t",
            "file",
            "--disk",
            "0:size=64M",
            "--net",
            f"0:mac={INST1_MAC}",
            "inst1",
            check=True,
        )
        c.run("gnt-instance", "add", "--no-start", "inst2", check=True)
        c.run("gnt-instance", "add-tags", "inst1", "keep", check=True)
        yield c


def _tree(root: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        out.append((rel + "/", 0))
        out.extend((os.path.join(rel, f), os.stat(os.path.join(d, f)).st_size) for f in files)
        dirs.sort()
    return sorted(out)


def snapshot(c: TempCluster) -> dict[str, Any]:
    """What bad input must not change: the config (on disk and in the master) and disk images."""
    cfg = c.config()
    client = c.client()
    try:
        live_serial = client.call("QueryClusterInfo", [])["serial_no"]
    finally:
        client.close()
    return {
        "serial_no": cfg["serial_no"],
        "live_serial_no": live_serial,
        "config": cfg,
        "file": _tree(c.paths.file_storage_dir),
        "sharedfile": _tree(c.paths.shared_file_storage_dir),
    }


# --- the CLI ----------------------------------------------------------------------------------

# (program, args, substrings the one-line reason must contain)
U = "usage"  # marks argparse usage errors (``prog: usage error: …``), not Failure lines
CLI_CASES: list[tuple[str, list[str], list[str]]] = [
    # unknown instance
    ("gnt-instance", ["info", "nope"], ["instance 'nope' not known"]),
    ("gnt-instance", ["list", "nope"], ["nope"]),
    ("gnt-instance", ["startup", "nope"], ["instance 'nope' not known"]),
    ("gnt-instance", ["shutdown", "nope"], ["instance 'nope' not known"]),
    ("gnt-instance", ["reboot", "nope"], ["instance 'nope' not known"]),
    ("gnt-instance", ["remove", "-f", "nope"], ["instance 'nope' not known"]),
    ("gnt-instance", ["rename", "nope", "new1"], ["instance 'nope' not known"]),
    ("gnt-instance", ["add-tags", "nope", "t1"], ["instance 'nope' not known"]),
    ("gnt-instance", ["list-tags", "nope"], ["instance 'nope' not known"]),
    # unknown field / bad filter
    ("gnt-instance", ["list", "-o", "nope"], ["unknown field 'nope'"]),
    ("gnt-instance", ["list", "-o", "name,nope", "--separator", ","], ["unknown field 'nope'"]),
    ("gnt-instance", ["list", "-F", "name =="], ["filter", "end of filter"]),
    ("gnt-instance", ["list", "-F", 'nope == "x"'], ["filter", "unknown field 'nope'"]),
    ("gnt-instance", ["list", "-F", "name =~ m/(/"], ["filter", "regular expression"]),
    ("gnt-instance", ["list", "--units", "x"], ["units", "'x'"]),
    # malformed --net
    ("gnt-instance", ["add", "--net", "mac=aa:00:00:00:00:01", "i3"], ["nics", "index 'mac=aa'"]),
    ("gnt-instance", ["add", "--net", "0:bogus=1", "i3"], ["nics[0]", "bogus"]),
    (
        "gnt-instance",
        ["add", "--net", "0:mode=bridged", "--net", "2:mode=bridged", "i3"],
        ["nics", "without gaps"],
    ),
    ("gnt-instance", ["add", "--net", "0:mode=bogus", "i3"], ["nics[0]/mode", "'bogus'"]),
    ("gnt-instance", ["add", "--net", "0:ip=1.2.3", "i3"], ["nics[0].ip", "IP address"]),
    ("gnt-instance", ["add", "--net", "0:mode=routed", "i3"], ["nics[0].ip", "routed"]),
    ("gnt-instance", ["add", "--net", "0:network=nonet", "i3"], ["network 'nonet' not known"]),
    # bad MACs
    ("gnt-instance", ["add", "--net", "0:mac=zz:00:00:00:00:01", "i3"], ["nics[0].mac", "MAC"]),
    (
        "gnt-instance",
        ["add", "--net", "0:mac=01:00:00:00:00:01", "i3"],
        ["01:00:00:00:00:01", "multicast"],
    ),
    ("gnt-instance", ["add", "--net", f"0:mac={INST1_MAC}", "i3"], [INST1_MAC, "already in use"]),
    (
        "gnt-instance",
        ["add", "--net", "0:mac=aa:00:00:00:00:05", "--net", "1:mac=aa:00:00:00:00:05", "i3"],
        ["aa:00:00:00:00:05", "already in use"],
    ),
    # malformed --disk, negative or absurd sizes
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:mode=rw", "i3"], ["missing size"]),
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:size=abc", "i3"], ["size", "'abc'"]),
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:size=-1", "i3"], ["size", "'-1'"]),
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:size=0", "i3"], ["size", "positive"]),
    (
        "gnt-instance",
        ["add", "-t", "file", "--disk", "0:size=99999999T", "i3"],
        ["'99999999T'", "absurdly large"],
    ),
    # large enough to fail on the node, after the job started creating disks
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:size=900T", "i3"], ["not enough space"]),
    (
        "gnt-instance",
        ["add", "-t", "file", "--disk", "0:size=1M", "--disk", "1:size=900T", "i3"],
        ["creating disk 1", "not enough space"],
    ),
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:size=1G,bogus=1", "i3"], ["bogus"]),
    ("gnt-instance", ["add", "-t", "file", "--disk", "0:size=1G,mode=xx", "i3"], ["mode", "'xx'"]),
    ("gnt-instance", ["add", "-t", "file", "--disk", "1:size=1G", "i3"], ["without gaps"]),
    ("gnt-instance", ["add", "-t", "file", "-s", "abc", "i3"], ["os_size", "'abc'"]),
    (
        "gnt-instance",
        ["add", "-t", "bogus", "--disk", "0:size=1G", "i3"],
        ["disk template 'bogus'"],
    ),
    ("gnt-instance", ["add", "-t", "diskless", "--disk", "0:size=1G", "i3"], ["takes no disks"]),
    ("gnt-instance", ["add", "-t", "file", "i3"], ["at least one disk"]),
    # -H / -B
    ("gnt-instance", ["add", "-H", "nope", "i3"], ["unknown hypervisor 'nope'"]),
    ("gnt-instance", ["add", "-H", "fake:nope=1", "i3"], ["unknown hv/fake parameter 'nope'"]),
    ("gnt-instance", ["add", "-H", "fake:start_delay=abc", "i3"], ["start_delay", "'abc'"]),
    ("gnt-instance", ["add", "-H", "fake:start_delay=-5", "i3"], ["start_delay", ">= 0"]),
    ("gnt-instance", ["add", "-H", "fake:reboot_behavior=x", "i3"], ["reboot_behavior", "'x'"]),
    ("gnt-instance", ["add", "-B", "nope=1", "i3"], ["unknown be parameter 'nope'"]),
    ("gnt-instance", ["add", "-B", "memory=abc", "i3"], ["beparams/memory", "'abc'"]),
    ("gnt-instance", ["add", "-B", "vcpus=0", "i3"], ["beparams/vcpus", ">= 1"]),
    ("gnt-instance", ["add", "-B", "auto_balance=maybe", "i3"], ["auto_balance", "'maybe'"]),
    ("gnt-instance", ["add", "-B", "minmem=1G,maxmem=512M", "i3"], ["minmem", "maxmem"]),
    ("gnt-instance", ["add", "-B", "vcpus=1,vcpus=2", "i3"], ["'vcpus' given twice"]),
    ("gnt-instance", ["startup", "-B", "nope=1", "inst2"], ["unknown be parameter 'nope'"]),
    ("gnt-instance", ["startup", "-H", "nope=1", "inst2"], ["unknown hv/fake parameter 'nope'"]),
    # names and tags
    ("gnt-instance", ["add", "inst1"], ["instance 'inst1' already exists"]),
    ("gnt-instance", ["add", "bad name"], ["instance_name", "not a valid name"]),
    ("gnt-instance", ["add", "--", "-x"], ["instance_name", "not a valid name"]),
    ("gnt-instance", ["add", "-x"], [U, "instance"]),
    ("gnt-instance", ["add", "a" * 70], ["instance_name", "not a valid name"]),
    ("gnt-instance", ["add", "--tags", "bad tag", "i3"], ["not a valid tag"]),
    ("gnt-instance", ["add", "-n", "nonode", "i3"], ["node 'nonode' not known"]),
    ("gnt-instance", ["add", "--priority", "bogus", "i3"], [U, "'bogus'"]),
    ("gnt-instance", ["rename", "inst2", "inst1"], ["instance 'inst1' already exists"]),
    ("gnt-instance", ["rename", "inst2", "bad name"], ["new_name", "not a valid name"]),
    ("gnt-instance", ["rename", "inst2", "inst2"], ["same as the old one"]),
    ("gnt-instance", ["rename", "inst1", "new1"], ["inst1 is running"]),
    ("gnt-instance", ["add-tags", "inst1", "bad tag!"], ["not a valid tag"]),
    ("gnt-instance", ["add-tags", "inst1", "x" * 129], ["not a valid tag"]),
    ("gnt-instance", ["add-tags", "--from", "/nonexistent/tags", "inst1"], ["/nonexistent/tags"]),
    ("gnt-instance", ["remove-tags", "inst1", "nope"], ["nope not found"]),
    ("gnt-instance", ["remove", "inst1"], ["Refusing without --force"]),
    # odd numbers
    ("gnt-instance", ["shutdown", "--timeout", "nan", "inst1"], [U, "'nan'"]),
    ("gnt-instance", ["shutdown", "--timeout", "-5", "inst1"], ["timeout", ">= 0"]),
    ("gnt-instance", ["reboot", "--shutdown-timeout", "inf", "inst1"], [U, "'inf'"]),
    # OS definitions (Debian's noop: API 10, no variants, no parameters)
    ("gnt-instance", ["add", "-o", "nope", "i3"], ["OS 'nope' not found on node node1"]),
    ("gnt-instance", ["add", "-o", "noop+x", "i3"], ["os_type", "doesn't support variants"]),
    ("gnt-instance", ["add", "-o", "noop", "-O", "a=1", "i3"], ["osparams/a", "no parameters"]),
    ("gnt-instance", ["add", "-O", "a=1", "i3"], ["osparams", "without an OS"]),
    ("gnt-instance", ["add", "-o", "../noop", "i3"], ["os_type", "invalid OS name"]),
    ("gnt-instance", ["reinstall", "-f", "nope"], ["instance 'nope' not known"]),
    ("gnt-instance", ["reinstall", "-f", "inst1"], ["marked to be up, cannot reinstall"]),
    ("gnt-instance", ["reinstall", "-f", "inst2"], ["Instance 'inst2' has no disks"]),
    ("gnt-instance", ["reinstall", "inst1"], ["Refusing without --force"]),
    ("gnt-os", ["list", "--priority", "bogus"], [U, "'bogus'"]),
    # gnt-node
    ("gnt-node", ["list", "nope"], ["nope"]),
    ("gnt-node", ["list", "-o", "nope"], ["unknown field 'nope'"]),
    ("gnt-node", ["info", "nope"], ["nope"]),
    ("gnt-node", ["info", "node1", "nope"], ["nope"]),
    ("gnt-node", ["list-tags", "nope"], ["node 'nope' not known"]),
    ("gnt-node", ["add-tags", "nope", "t"], ["node 'nope' not known"]),
    ("gnt-node", ["add-tags", "node1", "bad tag"], ["not a valid tag"]),
    ("gnt-node", ["list-fields", "nope"], ["unknown field 'nope'"]),
    # gnt-cluster
    ("gnt-cluster", ["modify", "-B", "nope=1"], ["unknown be parameter 'nope'"]),
    ("gnt-cluster", ["modify", "-B", "memory=abc"], ["beparams/memory", "'abc'"]),
    ("gnt-cluster", ["modify", "-B", "vcpus=0"], ["beparams/vcpus"]),
    ("gnt-cluster", ["modify", "-B", "minmem=1G"], ["minmem", "maxmem"]),
    ("gnt-cluster", ["modify", "-H", "nope:x=1"], ["unknown hypervisor 'nope'"]),
    ("gnt-cluster", ["modify", "-H", "fake:nope=1"], ["unknown hv/fake parameter 'nope'"]),
    ("gnt-cluster", ["modify", "-H", "fake:start_delay=abc"], ["start_delay", "'abc'"]),
    ("gnt-cluster", ["modify", "-N", "mode=bogus"], ["nicparams/mode", "'bogus'"]),
    ("gnt-cluster", ["modify", "-D", "nope:x=1"], ["disk template 'nope'"]),
    ("gnt-cluster", ["modify", "-m", "ZZ:00:00"], ["mac_prefix"]),
    ("gnt-cluster", ["modify", "-m", "01:00:00"], ["mac_prefix", "multicast"]),
    ("gnt-cluster", ["modify", "-C", "0"], ["candidate_pool_size"]),
    ("gnt-cluster", ["modify", "--enabled-hypervisors", "nope"], ["unknown hypervisor 'nope'"]),
    ("gnt-cluster", ["modify", "--enabled-hypervisors", ","], ["enabled_hypervisors", "empty"]),
    ("gnt-cluster", ["modify", "--enabled-disk-templates", "diskless"], ["file", "still used"]),
    ("gnt-cluster", ["modify"], ["nothing to change"]),
    ("gnt-cluster", ["add-tags", "bad tag"], ["not a valid tag"]),
    ("gnt-cluster", ["remove-tags", "nope"], ["nope not found"]),
    ("gnt-cluster", ["init", "--node-name", "node1", "other"], ["already initialised"]),
    ("gnt-cluster", ["queue", "bogus"], [U, "'bogus'"]),
    # gnt-job
    ("gnt-job", ["info", "abc"], ["invalid job id 'abc'"]),
    ("gnt-job", ["info", "99999"], ["99999"]),
    ("gnt-job", ["cancel", "99999"], ["job 99999 not found"]),
    ("gnt-job", ["cancel", "abc"], ["invalid job id 'abc'"]),
    ("gnt-job", ["archive", "99999"], ["job 99999 not found"]),
    ("gnt-job", ["watch", "99999"], ["job 99999 not found"]),
    ("gnt-job", ["watch", "abc"], ["invalid job id 'abc'"]),
    ("gnt-job", ["list", "-o", "nope"], ["unknown field 'nope'"]),
    ("gnt-job", ["list", "abc"], ["invalid job id 'abc'"]),
    ("gnt-job", ["list", "99999"], ["99999"]),
    ("gnt-job", ["list", "-F", "status =="], ["filter"]),
    ("gnt-job", ["autoarchive", "xyz"], ["invalid age 'xyz'"]),
    # gnt-debug
    ("gnt-debug", ["delay", "-1"], ["duration", ">= 0"]),
    ("gnt-debug", ["delay", "abc"], ["duration", "'abc'"]),
    ("gnt-debug", ["delay", "nan"], ["duration", "'nan'"]),
    ("gnt-debug", ["delay", "99999999"], ["duration", "<="]),
    ("gnt-debug", ["delay", "--repeat", "-1", "0"], ["repeat", ">= 0"]),
    ("gnt-debug", ["delay", "-n", "nonode", "0"], ["node 'nonode' not known"]),
    ("gnt-debug", ["delay", "-n", "bad name", "0"], ["on_nodes[0]", "not a valid name"]),
]


def _case_id(case: tuple[str, list[str], list[str]]) -> str:
    prog, args, _ = case
    return " ".join([prog.removeprefix("gnt-"), *args])[:60]


@pytest.mark.parametrize("case", CLI_CASES, ids=[_case_id(c) for c in CLI_CASES])
def test_cli_bad_input(bad_cluster: TempCluster, case: tuple[str, list[str], list[str]]) -> None:
    prog, args, wanted = case
    before = snapshot(bad_cluster)
    # ``add`` never starts what it might create: a stray success would be quick to spot.
    if args[0] == "add" and prog == "gnt-instance":
        args = ["add", "--no-start", *args[1:]]
    proc = bad_cluster.run(prog, *args, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit 0:\n{out}"
    assert "Traceback" not in out, out
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1, f"expected one line on stderr:\n{proc.stderr}"
    (line,) = err_lines
    if wanted[0] == U:
        assert line.startswith(f"{prog} {args[0]}: usage error: ") or line.startswith(
            f"{prog}: usage error: "
        ), line
        assert proc.returncode == ECode.INVAL.exit_code
        wanted = wanted[1:]
    else:
        m = FAILURE_RE.match(line)
        assert m, f"not a Failure line: {line!r}"
        code = ECode(m.group("code"))
        assert proc.returncode == code.exit_code, line
    for w in wanted:
        assert w in line, f"{w!r} not in {line!r}"
    assert snapshot(bad_cluster) == before, f"{prog} {' '.join(args)} changed the cluster"


def test_cli_cases_are_many_and_distinct() -> None:
    keys = [(p, tuple(a)) for p, a, _ in CLI_CASES]
    assert len(set(keys)) == len(keys)
    assert len(keys) >= 35


def test_baseline_still_intact(bad_cluster: TempCluster) -> None:
    """After all the bad input, the good objects are as they were and work."""
    proc = bad_cluster.run(
        "gnt-instance", "list", "--no-headers", "--separator", "|", "-o", "name,status,tags"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["inst1|running|keep", "inst2|ADMIN_down|"]
    cfg = bad_cluster.config()
    assert cfg["cluster"]["mac_prefix"] == "aa:00:00"
    assert sorted(i["name"] for i in cfg["instances"].values()) == ["inst1", "inst2"]


# --- the LUXI socket ----------------------------------------------------------------------------


def _connect(c: TempCluster) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(c.paths.master_socket))
    return s


def _read_reply(s: socket.socket, buf: bytearray) -> dict[str, Any] | None:
    """One reply from the stream, or None if the daemon closed the connection."""
    while luxi.ETX not in buf:
        chunk = s.recv(1 << 16)
        if not chunk:
            return None
        buf += chunk
    msg, _, rest = bytes(buf).partition(luxi.ETX)
    buf[:] = rest
    reply: dict[str, Any] = json.loads(msg)
    return reply


def _req(method: Any, args: Any, **extra: Any) -> bytes:
    return json.dumps({"method": method, "args": args, "version": 3000000, **extra}).encode()


def _assert_error(reply: dict[str, Any] | None, code: ECode, fragment: str) -> None:
    assert reply is not None, "the daemon closed the connection instead of replying"
    assert reply["success"] is False, reply
    result = reply["result"]
    assert isinstance(result, dict), reply
    assert result["code"] == code.value, result
    assert isinstance(result["message"], str)
    assert "\n" not in result["message"]
    assert fragment in result["message"], result


def _serves(c: TempCluster) -> None:
    s = _connect(c)
    try:
        s.sendall(_req("QueryConfigValues", [["cluster_name"]]) + luxi.ETX)
        assert _read_reply(s, bytearray()) == {"success": True, "result": ["test-cluster"]}
    finally:
        s.close()


DEEP = b"[" * 100_000 + b"]" * 100_000
INVAL, NOENT = ECode.INVAL, ECode.NOENT

# (name, message without ETX, expected code, fragment of the message)
LUXI_CASES: list[tuple[str, bytes, ECode, str]] = [
    ("garbage bytes", b"\xff\xfe\x00\x01garbage", INVAL, "malformed LUXI request"),
    ("not json", b"hello world", INVAL, "malformed LUXI request"),
    ("empty", b"", INVAL, "malformed LUXI request"),
    ("json array", b"[1, 2, 3]", INVAL, "malformed LUXI request"),
    ("json string", b'"SubmitJob"', INVAL, "malformed LUXI request"),
    ("json null", b"null", INVAL, "malformed LUXI request"),
    ("no method", b'{"args": []}', INVAL, "method"),
    ("method not a string", _req(5, []), INVAL, "method"),
    ("args not a list", _req("QueryJobs", 5), INVAL, "args"),
    ("version not an int", _req("QueryClusterInfo", [], version="x"), INVAL, "version"),
    ("deeply nested", b'{"method": "QueryJobs", "args": ' + DEEP + b"}", INVAL, "malformed"),
    ("huge integer", b'{"method": "QueryJobs", "args": [[1' + b"0" * 5000 + b"]]}", INVAL, ""),
    ("unknown method", _req("Nope", []), INVAL, "unknown LUXI method 'Nope'"),
    ("private method", _req("_decode_ops", [[]]), INVAL, "unknown LUXI method"),
    ("lowercase method", _req("start", []), INVAL, "unknown LUXI method"),
    ("too few args", _req("QueryJobs", []), INVAL, "bad arguments"),
    ("too many args", _req("QueryClusterInfo", [1, 2, 3]), INVAL, "bad arguments"),
    ("SubmitJob string", _req("SubmitJob", ["x"]), INVAL, "list of opcodes"),
    ("SubmitJob empty", _req("SubmitJob", [[]]), INVAL, "list of opcodes"),
    ("SubmitJob op not object", _req("SubmitJob", [[5]]), INVAL, "expected an object"),
    ("SubmitJob no OP_ID", _req("SubmitJob", [[{"x": 1}]]), INVAL, "OP_ID"),
    ("SubmitJob unknown OP_ID", _req("SubmitJob", [[{"OP_ID": "OP_NOPE"}]]), INVAL, "OP_NOPE"),
    (
        "SubmitJob wrong field type",
        _req("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": "abc"}]]),
        INVAL,
        "duration",
    ),
    (
        "SubmitJob unknown field",
        _req("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": 0, "bogus": 1}]]),
        INVAL,
        "bogus",
    ),
    (
        "SubmitJob bad instance name",
        _req("SubmitJob", [[{"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "a b"}]]),
        INVAL,
        "instance_name",
    ),
    (
        "SubmitJob deeply nested value",
        b'{"method": "SubmitJob", "args": [[{"OP_ID": "OP_INSTANCE_CREATE", '
        b'"instance_name": "x", "hvparams": {"a": ' + DEEP[:20000] + b"}}]]}",
        INVAL,
        "",
    ),
    ("SubmitManyJobs string", _req("SubmitManyJobs", ["x"]), INVAL, "list of jobs"),
    (
        "WaitForJobChange unknown job",
        _req("WaitForJobChange", [99999, ["status"], None, 0, 1.0]),
        NOENT,
        "job 99999 not found",
    ),
    (
        "WaitForJobChange bad id",
        _req("WaitForJobChange", ["abc", ["status"], None, 0, 1.0]),
        INVAL,
        "job_id",
    ),
    (
        "WaitForJobChange fields not a list",
        _req("WaitForJobChange", [1, "status", None, 0, 1.0]),
        INVAL,
        "fields",
    ),
    (
        "WaitForJobChange unknown field",
        _req("WaitForJobChange", [1, ["nope"], None, 0, 1.0]),
        INVAL,
        "unknown field 'nope'",
    ),
    ("QueryJobs bad id", _req("QueryJobs", [["abc"], ["id"]]), INVAL, "job_id"),
    ("QueryJobs ids not a list", _req("QueryJobs", [5, ["id"]]), INVAL, "job_ids"),
    ("QueryJobs unknown field", _req("QueryJobs", [None, ["nope"]]), INVAL, "'nope'"),
    ("Query unknown resource", _req("Query", ["nope", ["name"], None, None]), INVAL, "'nope'"),
    ("Query resource not a string", _req("Query", [5, ["name"], None, None]), INVAL, "what"),
    ("Query unknown field", _req("Query", ["instance", ["nope"], None, None]), INVAL, "'nope'"),
    (
        "Query unknown filter operator",
        _req("Query", ["instance", ["name"], ["~~", "name", "x"], None]),
        INVAL,
        "unknown filter operator '~~'",
    ),
    (
        "Query filter not a list",
        _req("Query", ["instance", ["name"], "x", None]),
        INVAL,
        "filter",
    ),
    (
        "Query filter on unknown field",
        _req("Query", ["instance", ["name"], ["=", "nope", 1], None]),
        INVAL,
        "'nope'",
    ),
    ("Query names not a list", _req("Query", ["instance", ["name"], None, "x"]), INVAL, "names"),
    (
        "Query unknown instance",
        _req("Query", ["instance", ["name"], None, ["nope"]]),
        NOENT,
        "nope",
    ),
    ("QueryFields unknown resource", _req("QueryFields", ["nope", None]), INVAL, "'nope'"),
    ("QueryFields resource a list", _req("QueryFields", [["x"], None]), INVAL, "what"),
    ("CancelJob unknown", _req("CancelJob", [99999]), NOENT, "job 99999 not found"),
    ("CancelJob bad id", _req("CancelJob", [{"a": 1}]), INVAL, "job_id"),
    ("ArchiveJob unknown", _req("ArchiveJob", [99999]), NOENT, "job 99999 not found"),
    ("AutoArchiveJobs negative", _req("AutoArchiveJobs", [-1]), INVAL, "age"),
    ("QueryTags bad kind", _req("QueryTags", ["nope", "x"]), INVAL, "kind"),
    ("QueryTags unknown node", _req("QueryTags", ["node", "nope"]), NOENT, "nope"),
    ("QueryTags name not a string", _req("QueryTags", ["instance", 5]), INVAL, "name"),
    ("QueryConfigValues not a list", _req("QueryConfigValues", ["x"]), INVAL, "names"),
]


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [c[1:] for c in LUXI_CASES],
    ids=[c[0] for c in LUXI_CASES],
)
def test_luxi_malformed_request(
    bad_cluster: TempCluster, payload: bytes, code: ECode, fragment: str
) -> None:
    pid = bad_cluster.masterd_pid()
    before = snapshot(bad_cluster)
    s = _connect(bad_cluster)
    try:
        buf = bytearray()
        s.sendall(payload + luxi.ETX)
        _assert_error(_read_reply(s, buf), code, fragment)
        # The same connection still serves a good request after the bad one.
        s.sendall(_req("QueryConfigValues", [["cluster_name"]]) + luxi.ETX)
        assert _read_reply(s, buf) == {"success": True, "result": ["test-cluster"]}
    finally:
        s.close()
    assert bad_cluster.masterd_pid() == pid
    assert snapshot(bad_cluster) == before


def test_luxi_stream_abuse_daemon_keeps_serving(cluster: TempCluster) -> None:
    pid = cluster.masterd_pid()
    assert pid is not None

    # A half-sent message, then the client goes away.
    s = _connect(cluster)
    s.sendall(b'{"method": "Query", "args": ["inst')
    s.close()
    _serves(cluster)

    # Connect and close without a byte.
    _connect(cluster).close()
    _serves(cluster)

    # Two requests in one write, the second malformed: two replies, in order.
    s = _connect(cluster)
    try:
        buf = bytearray()
        s.sendall(_req("QueryConfigValues", [["cluster_name"]]) + luxi.ETX + b"junk" + luxi.ETX)
        assert _read_reply(s, buf) == {"success": True, "result": ["test-cluster"]}
        _assert_error(_read_reply(s, buf), ECode.INVAL, "malformed LUXI request")
    finally:
        s.close()

    # A bad request without waiting for the reply, then closing.
    s = _connect(cluster)
    s.sendall(b"garbage" + luxi.ETX)
    s.close()
    _serves(cluster)

    # More than the 64 MiB limit without a terminator: an error reply (or a
    # closed connection), never a dead daemon.
    s = _connect(cluster)
    chunk = b"x" * (1 << 20)
    try:
        for _ in range(luxi.MAX_MESSAGE // len(chunk) + 1):
            s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon stopped reading: expected
    try:
        reply = _read_reply(s, bytearray())
    except ConnectionResetError:
        reply = None
    finally:
        s.close()
    if reply is not None:
        _assert_error(reply, ECode.INVAL, "too large")

    assert cluster.masterd_pid() == pid
    _serves(cluster)
    proc = cluster.run("gnt-cluster", "getmaster")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "node1"
    assert cluster.masterd_pid() == pid


# --- the opcode decoder -------------------------------------------------------------------------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
_op_ids = st.sampled_from([*sorted(opcodes.OP_CLASSES), "OP_NOPE", "", "op_test_delay"])
_field_names = st.sampled_from(
    [*sorted({f for cls in opcodes.OP_CLASSES.values() for f in cls.__struct_fields__}), "bogus"]
)
_opcodes = st.builds(
    lambda op_id, fields: {"OP_ID": op_id, **fields},
    _op_ids,
    st.dictionaries(_field_names, _json, max_size=6),
)


def _nested(depth: int) -> Any:
    x: Any = []
    for _ in range(depth):
        x = [x]
    return x


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_opcodes, _json))
@example({"OP_ID": "OP_TEST_DELAY", "duration": float("nan")})
@example({"OP_ID": "OP_TEST_DELAY", "duration": 2**100})
@example({"OP_ID": 5})
@example({1: 2, "OP_ID": "OP_TEST_DELAY"})
@example({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "x", "hvparams": {"a": _nested(50)}})
def test_opcode_decoding_never_crashes(data: Any) -> None:
    try:
        op = opcodes.from_obj(data)
    except CorralError as err:
        assert err.code == ECode.INVAL, err
    else:
        assert isinstance(op, opcodes.OpCode)
    try:
        text = json.dumps(data)
    except (TypeError, ValueError, RecursionError):
        return
    try:
        op = opcodes.decode(text)
    except CorralError as err:
        assert err.code == ECode.INVAL, err
    else:
        assert isinstance(op, opcodes.OpCode)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(b'{"OP_ID": "OP_TEST_DELAY", "duration": 1e400}')
@example(b'{"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "x", "hvparams": {"a": ' + DEEP + b"}}")
def test_opcode_decode_bytes_never_crashes(raw: bytes) -> None:
    try:
        op = opcodes.decode(raw)
    except CorralError as err:
        assert err.code == ECode.INVAL, err
    else:
        assert isinstance(op, opcodes.OpCode)
