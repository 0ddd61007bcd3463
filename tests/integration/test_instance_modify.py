"""``gnt-instance modify`` and ``grow-disk`` end to end (real CLI, masterd, fake hypervisor).

The fake hypervisor cannot change the devices of a running instance, so on a
running fake instance a NIC/disk change is recorded for the next start with
a warning (the default), ``--hotplug`` is refused, and a disk removal is
refused (the guest would keep using a disk whose data is deleted). What a
user sees is checked: the command's output and exit code, ``gnt-instance
list``, the config and the disk images. Bad input exits non-zero with one
``Failure:`` line and changes nothing at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import CorralError, ECode
from corral.testing.cluster import TempCluster

WEB_MAC = "aa:00:00:11:22:33"
OTHER_MAC = "aa:00:00:11:22:44"  # NIC of the diskless instance "nodisk"
FAILURE_RE = re.compile(r"^Failure: (?P<msg>.+) \[(?P<code>[a-z_]+)\]$")
NOTE = "take effect only at the next (re)start of the instance"
FAKE_CANNOT = "the fake hypervisor cannot change devices of a running VM"


def _add_web(c: TempCluster, *extra: str) -> None:
    """``web``: running, OS noop, one 16 MiB file disk, one NIC named ``lan``."""
    c.run(
        "gnt-instance",
        "add",
        "-t",
        "file",
        "-o",
        "noop",
        "--disk",
        "0:size=16M",
        "--net",
        f"0:mac={WEB_MAC},name=lan",
        *extra,
        "web",
        check=True,
    )


def _list(c: TempCluster, name: str, *fields: str) -> list[str]:
    out = c.run(
        "gnt-instance", "list", "--no-headers", "--separator=|", "-o", ",".join(fields), name,
        check=True,
    ).stdout  # fmt: skip
    (line,) = out.splitlines()
    return line.split("|")


def _disks(c: TempCluster, name: str) -> list[dict[str, Any]]:
    cfg = c.config()
    (inst,) = (i for i in cfg["instances"].values() if i["name"] == name)
    return [cfg["disks"][u] for u in inst["disks"]]


def _image(c: TempCluster, disk: dict[str, Any]) -> Path:
    return c.paths.host_path(disk["logical_id"][1])


def _images(c: TempCluster) -> dict[str, int]:
    """Every disk image of the cluster (path below the storage dir → size in bytes)."""
    root = c.paths.file_storage_dir
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*.img"))}


def _modify(c: TempCluster, *args: str) -> Any:
    return c.run("gnt-instance", "modify", *args)


def _ok(proc: Any) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(proc.stdout)


def _failure(proc: Any) -> tuple[str, ECode]:
    """The one ``Failure: <reason> [<code>]`` line of a failed command, checked."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit 0:\n{out}"
    assert "Traceback" not in out, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{proc.stderr}"
    m = FAILURE_RE.match(lines[0])
    assert m, f"not a Failure line: {lines[0]!r}"
    code = ECode(m.group("code"))
    assert proc.returncode == code.exit_code, lines[0]
    return m.group("msg"), code


# --- NICs and disks of a running, then stopped instance -----------------------------------


def test_devices_of_a_running_then_stopped_instance(cluster: TempCluster) -> None:
    c = cluster
    _add_web(c)
    assert _list(c, "web", "status", "nic.count") == ["running", "1"]

    # A NIC: recorded, deferred to the next start, with a warning and Ganeti's note.
    out = _ok(_modify(c, "--net", "add", "web"))
    m = re.search(r"^ - nic\.1 +-> add:mac=(?P<mac>[0-9a-f:]{17}),", out, re.M)
    assert m, out
    assert re.search(r"^ - nic\.1 +-> hotplug:deferred$", out, re.M), out
    assert f"WARNING: cannot add a nic live ({FAKE_CANNOT})" in out
    assert "takes effect at the next start of the instance" in out
    assert NOTE in out
    assert _list(c, "web", "nic.count", "nic.macs", "nic.names", "status") == [
        "2",
        f"{WEB_MAC},{m['mac']}",
        "lan,-",
        "running",
    ]

    # --hotplug: refused with the reason; nothing changed.
    serial = c.config()["serial_no"]
    msg, code = _failure(_modify(c, "--hotplug", "--net", "add", "web"))
    assert msg == f"cannot add a nic of web live: {FAKE_CANNOT}"
    assert code is ECode.STATE
    assert c.config()["serial_no"] == serial
    assert _list(c, "web", "nic.count") == ["2"]

    # A disk: the image is created now, the guest gets it at the next start.
    before = _images(c)
    out = _ok(_modify(c, "--disk", "add:size=8M", "web"))
    assert re.search(r"^ - disk/1 +-> add:size=8,mode=rw$", out, re.M), out
    assert "disk/1 -> hotplug:deferred" in out
    disks = _disks(c, "web")
    assert [d["size"] for d in disks] == [16, 8]
    assert [d["iv_name"] for d in disks] == ["disk/0", "disk/1"]
    new_image = _image(c, disks[1])
    assert new_image.stat().st_size == 8 << 20
    assert set(_images(c)) - set(before) == {str(new_image.relative_to(c.paths.file_storage_dir))}
    assert _list(c, "web", "disk.count", "disk.sizes") == ["2", "16,8"]

    # Removing it from the running instance without hotplug: refused, no half-way warning.
    serial = c.config()["serial_no"]
    proc = _modify(c, "-f", "--disk", "1:remove", "web")
    msg, code = _failure(proc)
    assert msg == (
        f"cannot remove a disk from the running instance web live ({FAKE_CANNOT}); stop it first"
    )
    assert code is ECode.STATE
    assert "WARNING" not in proc.stdout and "next start" not in proc.stdout
    assert new_image.exists() and c.config()["serial_no"] == serial
    msg, _ = _failure(_modify(c, "-f", "--no-hotplug", "--disk", "1:remove", "web"))
    assert msg.endswith("without hotplug; stop it first or allow hotplug")
    assert new_image.exists() and len(_disks(c, "web")) == 2

    # Stopped: the removal works and deletes the image.
    c.run("gnt-instance", "shutdown", "web", check=True)
    out = _ok(_modify(c, "-f", "--disk", "1:remove", "web"))
    assert re.search(r"^ - disk/1 +-> remove$", out, re.M), out
    assert "disk/1 -> hotplug:not running" in out
    assert not new_image.exists()
    assert _images(c) == before
    assert _list(c, "web", "disk.count", "disk.sizes") == ["1", "16"]

    # A NIC of the stopped instance: config only; --hotplug has nothing to plug into.
    out = _ok(_modify(c, "--net", "0:modify,link=br7", "web"))
    assert f"nic.0 -> modify:mac={WEB_MAC},ip=None,mode=bridged,link=br7,vlan=,name=lan" in out
    assert "nic.0 -> hotplug:not running" in out and "WARNING" not in out
    out = _ok(_modify(c, "--net", "lan:modify,mode=routed,ip=198.51.100.7", "web"))
    assert _list(c, "web", "nic.links", "nic.modes", "nic.ips") == [
        "br7,br0",
        "routed,bridged",
        "198.51.100.7,-",
    ]
    msg, code = _failure(_modify(c, "--hotplug", "--net", "add", "web"))
    assert "web is not running: nothing to hotplug into" in msg and code is ECode.STATE
    msg, _ = _failure(_modify(c, "-f", "--disk", "0:remove", "web"))
    assert msg == "cannot remove the last disk of an instance"

    # The deferred NIC is there at the next start; the cluster verifies clean.
    c.run("gnt-instance", "startup", "web", check=True)
    assert _list(c, "web", "status", "nic.count") == ["running", "2"]
    assert c.run("gnt-cluster", "verify").returncode == 0


def test_several_changes_in_one_job(cluster: TempCluster) -> None:
    """Identifiers refer to the list as the earlier changes of the same job left it."""
    c = cluster
    _add_web(c, "--no-start")

    # Insert at 0, then remove index 1: that is the NIC that was first.
    out = _ok(_modify(c, "-f", "--net", "0:add,name=new", "--net", "1:remove", "web"))
    assert _list(c, "web", "nic.names", "nic.count") == ["new", "1"]
    assert WEB_MAC not in _list(c, "web", "nic.macs")[0]
    assert "nic.1 -> remove" in out

    # A NIC added and then changed in the same job keeps the MAC it was added with.
    out = _ok(_modify(c, "--net", "add:name=x", "--net", "x:modify,link=br1", "web"))
    m = re.search(r"nic\.1 +-> add:mac=(?P<mac>[0-9a-f:]{17}),", out)
    assert m, out
    assert f"nic.1 -> modify:mac={m['mac']},ip=None,mode=bridged,link=br1" in out
    assert _list(c, "web", "nic.macs", "nic.links")[0].split(",")[1] == m["mac"]
    assert _list(c, "web", "nic.links") == ["br0,br1"]

    # Setting a NIC's MAC to the one it has is no change, not "already in use".
    mac0 = _list(c, "web", "nic.macs")[0].split(",")[0]
    out = _ok(_modify(c, "-f", "--net", f"0:modify,mac={mac0.upper()}", "web"))
    assert f"nic.0 -> modify:mac={mac0}," in out

    # Two changes of one disk, and a disk added then changed by its name.
    out = _ok(_modify(c, "--disk", "0:modify,mode=ro", "--disk", "0:modify,name=root", "web"))
    assert "disk/0 -> modify:mode=ro" in out and "disk/0 -> modify:name=root" in out
    out = _ok(_modify(c, "--disk", "add:size=4M,name=data", "--disk", "data:modify,mode=ro", "web"))
    disks = _disks(c, "web")
    assert [(d["name"], d["mode"], d["size"]) for d in disks] == [
        ("root", "ro", 16),
        ("data", "ro", 4),
    ]
    assert _image(c, disks[1]).stat().st_size == 4 << 20  # its path survived the modify

    # Add one disk and remove another by name: the image of the removed one goes.
    old = _image(c, disks[0])
    _ok(_modify(c, "-f", "--disk", "add:size=2M", "--disk", "root:remove", "web"))
    disks = _disks(c, "web")
    assert [(d["name"], d["size"], d["iv_name"]) for d in disks] == [
        ("data", 4, "disk/0"),
        (None, 2, "disk/1"),
    ]
    assert not old.exists()
    assert sorted(_images(c).values()) == [2 << 20, 4 << 20]


def test_parameters(cluster: TempCluster) -> None:
    c = cluster
    _add_web(c)
    out = _ok(_modify(c, "-B", "memory=512M,vcpus=2", "-H", "start_delay=0.5", "web"))
    assert re.search(r"^ - be/memory +-> 512M$", out, re.M), out
    assert re.search(r"^ - hv/start_delay +-> 0.5$", out, re.M), out
    assert NOTE in out
    assert _list(c, "web", "be/maxmem", "be/vcpus", "hv/start_delay", "oper_ram") == [
        "512",
        "2",
        "0.5",
        "128",  # the running instance keeps its memory until the next start
    ]
    info = c.run("gnt-instance", "info", "web", check=True).stdout
    assert "start_delay: 0.5\n" in info and "vcpus: 2\n" in info
    # "default" drops the override: the cluster's value again.
    _ok(_modify(c, "-H", "start_delay=default", "-B", "vcpus=default", "web"))
    info = c.run("gnt-instance", "info", "web", check=True).stdout
    assert "start_delay: 0.0 (default)" in info and "vcpus: 1 (default)" in info
    c.run("gnt-instance", "reboot", "-t", "full", "web", check=True)
    assert _list(c, "web", "oper_ram") == ["512"]


def test_grow_disk(cluster: TempCluster) -> None:
    c = cluster
    _add_web(c)
    (disk,) = _disks(c, "web")
    image = _image(c, disk)
    assert image.stat().st_size == 16 << 20

    proc = c.run("gnt-instance", "grow-disk", "web", "0", "8M", check=True)
    assert "Growing disk 0 of instance web from 16 MiB to 24 MiB" in proc.stdout
    # The fake guest cannot be told: it sees the new size at its next start.
    assert re.search(r"WARNING: .*sees the new size only after its next start", proc.stdout)
    assert image.stat().st_size == 24 << 20
    assert _list(c, "web", "disk.sizes") == ["24"]

    c.run("gnt-instance", "shutdown", "web", check=True)
    proc = c.run("gnt-instance", "grow-disk", "--absolute", "web", "0", "1G", check=True)
    assert "from 24 MiB to 1024 MiB" in proc.stdout and "WARNING" not in proc.stdout
    assert image.stat().st_size == 1 << 30
    assert _disks(c, "web")[0]["size"] == 1024
    # Grown sparse: the node did not write a GiB.
    assert image.stat().st_blocks * 512 < 16 << 20

    # Never shrunk; the same size is no change.
    serial = c.config()["serial_no"]
    msg, code = _failure(c.run("gnt-instance", "grow-disk", "--absolute", "web", "0", "512M"))
    assert msg == "disk 0 is 1024 MiB, more than the requested 512 MiB; disks are never shrunk"
    assert code is ECode.INVAL
    assert image.stat().st_size == 1 << 30 and c.config()["serial_no"] == serial
    c.run("gnt-instance", "grow-disk", "--absolute", "web", "0", "1G", check=True)
    assert image.stat().st_size == 1 << 30 and _list(c, "web", "disk.sizes") == ["1024"]


# --- bad input: one cluster for all cases ------------------------------------------------


@pytest.fixture(scope="module")
def mod_cluster() -> Iterator[TempCluster]:
    """web (running, OS noop, a file disk, NIC "lan"); nodisk (down, diskless, OTHER_MAC)."""
    with TempCluster(prefix="corral-modify-") as c:
        _add_web(c)
        c.run("gnt-instance", "add", "--no-start", "--net", f"0:mac={OTHER_MAC}", "nodisk")
        yield c


def snapshot(c: TempCluster) -> dict[str, Any]:
    """What a refused change must leave as it was: config (file and master), devices, images."""
    client = c.client()
    try:
        live_serial = client.call("QueryClusterInfo", [])["serial_no"]
    finally:
        client.close()
    fields = "name,nic.macs,nic.names,nic.links,nic.modes,disk.sizes,disk.uuids"
    listed = c.run("gnt-instance", "list", "--no-headers", "-o", fields, check=True).stdout
    return {
        "live_serial_no": live_serial,
        "config": c.config(),
        "list": listed.splitlines(),
        "images": _images(c),
    }


U = "usage"  # an argparse usage error, not a Failure line
GROW = "grow-disk"
BAD: list[tuple[list[str], list[str]]] = [
    # unknown keys (the CLI knows them) and keys the action does not take
    (["--net", "0:modify,bogus=1", "web"], ["--net", "unknown nic parameter(s) for modify: bogus"]),
    (["--net", "add:bogus=1", "web"], ["unknown nic parameter(s) for add: bogus", "known: ip,"]),
    (["--disk", "0:modify,bogus=1", "web"], ["unknown disk parameter(s) for modify: bogus"]),
    (["--disk", "add:size=8M,bogus=1", "web"], ["unknown disk parameter(s) for add: bogus"]),
    (["--disk", "0:modify,size=1G", "web"], ["for modify: size", "known: mode, name"]),
    (["-f", "--net", "0:remove,link=br0", "web"], ["--net", "remove takes no parameters"]),
    (["-f", "--disk", "0:remove,size=1", "web"], ["--disk", "remove takes no parameters"]),
    # identifiers
    (["--net", "5:modify,link=br1", "web"], ["nic index 5 out of range (the instance has 1 nic)"]),
    (["-f", "--net", "5:remove", "web"], ["nic index 5 out of range"]),
    (["--net", "7:add", "web"], ["nic index 7 out of range"]),
    (
        ["--disk", "3:modify,mode=ro", "web"],
        ["disk index 3 out of range (the instance has 1 disk)"],
    ),
    (["--net", "nope:modify,link=br1", "web"], ["nic 'nope' not found"]),
    (["--disk", "nope:modify,mode=ro", "web"], ["disk 'nope' not found"]),
    (["--net", "add", "nope"], ["instance 'nope' not known"]),
    # MACs, IPs, links
    (["--net", f"add:mac={OTHER_MAC}", "web"], [f"MAC address {OTHER_MAC} already in use"]),
    (["-f", "--net", f"0:modify,mac={OTHER_MAC}", "web"], [OTHER_MAC, "already in use"]),
    (
        ["--net", "add:mac=aa:00:00:00:00:05", "--net", "add:mac=aa:00:00:00:00:05", "web"],
        ["nics[1]", "aa:00:00:00:00:05 already in use"],
    ),
    (["--net", "add:mac=zz:00:00:11:22:55", "web"], ["nics[0].mac", "not a valid MAC address"]),
    (["--net", "add:mac=01:00:00:11:22:55", "web"], ["01:00:00:11:22:55 is a multicast address"]),
    (["--net", "add:mode=routed", "web"], ["nics[0].ip", "routed NICs need an IP address"]),
    (["--net", "0:modify,mode=routed", "web"], ["routed NICs need an IP address"]),
    (["--net", "add:ip=1.2.3", "web"], ["nics[0].ip", "not a valid IP address"]),
    (["--net", "add:mode=bogus", "web"], ["nics[0]/mode", "'bogus'"]),
    (["--net", "add:network=nonet", "web"], ["network 'nonet' not known"]),
    (["--net", "add:name=lan", "web"], ["duplicate NIC name(s): lan"]),
    # disks
    (["--disk", "0:modify,mode=ro", "nodisk"], ["disk operations are not possible on a diskless"]),
    (["--disk", "add:size=8M", "nodisk"], ["not possible on a diskless instance"]),
    (["--disk", "add:size=0", "web"], ["size must be positive"]),
    (["--disk", "add:mode=rw", "web"], ["missing size"]),
    (["--disk", "add:size=8M,mode=xx", "web"], ["disks[0].mode", "'xx'"]),
    (["--disk", "add:size=900T", "web"], ["creating disk 1", "not enough space"]),
    (["-f", "--disk", "0:remove", "web"], ["cannot remove the last disk"]),
    # what to do, and how
    (["web"], ["nothing to change"]),
    (["--hotplug", "--no-hotplug", "--net", "add", "web"], [U, "not allowed with argument"]),
    (["--hotplug", "--net", "add", "web"], ["cannot add a nic of web live", FAKE_CANNOT]),
    (["--hotplug", "--disk", "add:size=8M", "web"], ["cannot add a disk of web live"]),
    (["--hotplug", "--net", "add", "nodisk"], ["nodisk is not running", "nothing to hotplug"]),
    (["--net", "0:remove", "web"], ["Refusing without --force"]),
    # parameters
    (["-B", "nope=1", "web"], ["unknown be parameter 'nope'"]),
    (["-B", "minmem=1G,maxmem=512M", "web"], ["minmem (1024) is larger than maxmem (512)"]),
    (["-H", "nope=1", "web"], ["hvparams/nope", "unknown hv/fake parameter 'nope'"]),
    (["-H", "start_delay=-1", "web"], ["start_delay", ">= 0"]),
    (["-O", "a=1", "web"], ["osparams/a", "OS 'noop' takes no parameters"]),
    (["-O", "a=1", "nodisk"], ["the instance has no OS"]),
    # grow-disk
    ([GROW, "web", "1", "8M"], ["instance web has no disk 1 (1 disk)"]),
    ([GROW, "nodisk", "0", "8M"], ["instance nodisk has no disk 0 (0 disks)"]),
    ([GROW, "--absolute", "web", "0", "8M"], ["disks are never shrunk"]),
    ([GROW, "web", "0", "900T"], ["growing disk 0", "not enough space"]),
    ([GROW, "web", "x", "8M"], ["invalid disk index 'x'"]),
    ([GROW, "web", "0", "0"], ["size must be positive"]),
    ([GROW, "nope", "0", "8M"], ["instance 'nope' not known"]),
]


def _case_id(case: tuple[list[str], list[str]]) -> str:
    return " ".join(case[0])[:60]


@pytest.mark.parametrize("case", BAD, ids=[_case_id(c) for c in BAD])
def test_bad_input_changes_nothing(
    mod_cluster: TempCluster, case: tuple[list[str], list[str]]
) -> None:
    args, wanted = case
    c = mod_cluster
    before = snapshot(c)
    cmd = args if args[0] == GROW else ["modify", *args]
    proc = c.run("gnt-instance", *cmd, timeout=60)
    if wanted[0] == U:
        assert proc.returncode == ECode.INVAL.exit_code, proc.stderr
        (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
        assert line.startswith(f"gnt-instance {cmd[0]}: usage error: "), line
        msg, wanted = line, wanted[1:]
    else:
        msg, _ = _failure(proc)
    for w in wanted:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert snapshot(c) == before, f"gnt-instance {' '.join(cmd)} changed the cluster"


def test_bad_cases_are_distinct() -> None:
    keys = [tuple(a) for a, _ in BAD]
    assert len(set(keys)) == len(keys)


# Checks of the master itself, for opcodes the CLI would not build.
RAW: list[tuple[dict[str, Any], ECode, str]] = [
    ({}, ECode.INVAL, "no changes requested"),
    ({"disks": [["add", -1, {"size": 0}]]}, ECode.INVAL, "disks[0].size: size 0 MiB out of range"),
    ({"nics": [["remove", 0, {"mac": "auto"}]]}, ECode.INVAL, "remove takes no parameters"),
    ({"nics": [["modify", 0, {"bogus": 1}]]}, ECode.INVAL, "unknown parameter(s) bogus"),
    ({"disks": [["modify", 0, {"size": 64}]]}, ECode.INVAL, "unknown parameter(s) size"),
    ({"nics": [["add", "lan", {}]]}, ECode.INVAL, "add takes an index (or -1), not 'lan'"),
    (
        {"nics": [["add", -1, {}]], "hotplug": True, "hotplug_if_possible": True},
        ECode.INVAL,
        "hotplug and hotplug_if_possible exclude each other",
    ),
]


@pytest.mark.parametrize(("fields", "code", "fragment"), RAW, ids=[r[2][:40] for r in RAW])
def test_master_refuses_raw_opcodes(
    mod_cluster: TempCluster, fields: dict[str, Any], code: ECode, fragment: str
) -> None:
    c = mod_cluster
    before = snapshot(c)
    client = c.client()
    try:
        job = client.submit_job(
            [{"OP_ID": "OP_INSTANCE_SET_PARAMS", "instance_name": "web", **fields}]
        )
        with pytest.raises(CorralError) as ei:
            client.wait_for_job(job)
    finally:
        client.close()
    assert ei.value.code is code
    assert fragment in str(ei.value)
    assert snapshot(c) == before


def test_dry_run_lists_the_changes_and_changes_nothing(mod_cluster: TempCluster) -> None:
    c = mod_cluster
    before = snapshot(c)
    proc = _modify(
        c, "--dry-run", "-B", "vcpus=2", "--net", "add", "--net", "lan:modify,link=br5",
        "--disk", "add:size=8M", "--disk", "0:modify,name=root", "web",
    )  # fmt: skip
    out = _ok(proc)
    assert "Dry run: the changes to instance web are valid; nothing was changed" in out
    listed = re.findall(r"^ - (\S+) +-> (\S+)$", out, re.M)
    assert listed == [
        ("be/vcpus", "2"),
        ("nic.1", "add"),
        ("nic.0", "modify"),
        ("disk/1", "add"),
        ("disk/0", "modify"),
    ]
    assert snapshot(c) == before
    # A dry run is checked like the real thing.
    msg, _ = _failure(_modify(c, "--dry-run", "--net", "add:mac=zz:00:00:00:00:01", "web"))
    assert "not a valid MAC address" in msg
    assert snapshot(c) == before


def test_the_bad_input_cluster_still_works(mod_cluster: TempCluster) -> None:
    c = mod_cluster
    assert _list(c, "web", "status", "nic.count", "disk.count") == ["running", "1", "1"]
    out = _ok(_modify(c, "--net", "add:name=wan", "web"))
    assert "hotplug:deferred" in out
    assert _list(c, "web", "nic.names") == ["lan,wan"]
