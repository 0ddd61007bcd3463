"""Hooks with Ganeti's environment, run by the real master daemon."""

from __future__ import annotations

from pathlib import Path

from corral.testing.cluster import TempCluster

ENV_DUMP = """#!/bin/sh
env | grep ^GANETI_ | sort > "{out}/$GANETI_HOOKS_PHASE-$GANETI_HOOKS_PATH.env"
"""


def _hook(c: TempCluster, hpath: str, phase: str, name: str, body: str) -> Path:
    d = c.paths.hooks_dir / f"{hpath}-{phase}.d"
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(body)
    p.chmod(0o755)
    return p


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_hooks_environment(cluster: TempCluster, tmp_path: Path) -> None:
    c = cluster
    for phase in ("pre", "post"):
        _hook(c, "instance-add", phase, "10-dump", ENV_DUMP.format(out=tmp_path))
    # Not executable, bad name: skipped like run-parts does.
    _hook(c, "instance-add", "pre", "bad.name", "#!/bin/sh\nexit 1\n")
    c.run(
        "gnt-instance",
        "add",
        "-t",
        "file",
        "--disk",
        "0:size=8M",
        "--net",
        "0:mode=routed,ip=203.0.113.7,link=100",
        "--tags",
        "a,b",
        "inst1",
        check=True,
    )
    pre = _env(tmp_path / "pre-instance-add.env")
    post = _env(tmp_path / "post-instance-add.env")
    assert pre["GANETI_HOOKS_VERSION"] == "2"
    assert pre["GANETI_OP_CODE"] == "OP_INSTANCE_CREATE"
    assert pre["GANETI_HOOKS_PHASE"] == "pre"
    assert pre["GANETI_HOOKS_PATH"] == "instance-add"
    assert pre["GANETI_OBJECT_TYPE"] == "INSTANCE"
    assert pre["GANETI_CLUSTER"] == "test-cluster"
    assert pre["GANETI_MASTER"] == "node1"
    assert pre["GANETI_INSTANCE_NAME"] == "inst1"
    assert pre["GANETI_INSTANCE_PRIMARY"] == "node1"
    assert pre["GANETI_INSTANCE_DISK_TEMPLATE"] == "file"
    assert pre["GANETI_INSTANCE_DISK0_SIZE"] == "8"
    assert pre["GANETI_INSTANCE_ADD_MODE"] == "create"
    assert post["GANETI_HOOKS_PHASE"] == "post"
    # After creation the full instance environment is there, plus GANETI_POST_*.
    assert post["GANETI_POST_INSTANCE_NIC0_IP"] == "203.0.113.7"
    assert post["GANETI_POST_INSTANCE_NIC0_MODE"] == "routed"
    assert post["GANETI_POST_INSTANCE_NIC0_LINK"] == "100"
    assert post["GANETI_POST_INSTANCE_TAGS"] == "a b"
    assert post["GANETI_POST_INSTANCE_BE_maxmem"] == "128"
    assert "GANETI_POST_INSTANCE_HV_start_delay" in post
    (uuid,) = c.config()["instances"]
    assert post["GANETI_POST_INSTANCE_UUID"] == uuid
    assert "GANETI_INSTANCE_UUID" not in pre  # not created yet in the pre phase


def test_failing_pre_hook_aborts(cluster: TempCluster) -> None:
    c = cluster
    _hook(
        c,
        "instance-add",
        "pre",
        "50-policy",
        '#!/bin/sh\necho "denied by policy: $GANETI_INSTANCE_NAME"\nexit 1\n',
    )
    before = c.config()["serial_no"]
    r = c.run("gnt-instance", "add", "-t", "file", "--disk", "0:size=8M", "inst1")
    assert r.returncode != 0
    assert "denied by policy: inst1" in r.stderr
    assert "50-policy" in r.stderr
    assert c.config()["serial_no"] == before
    assert not any(c.paths.file_storage_dir.rglob("*.img"))


def test_failing_post_hook_warns(cluster: TempCluster) -> None:
    c = cluster
    c.run("gnt-instance", "add", "--no-start", "inst1", check=True)
    _hook(c, "instance-start", "post", "90-notify", "#!/bin/sh\necho cannot notify\nexit 3\n")
    r = c.run("gnt-instance", "startup", "inst1")
    assert r.returncode == 0
    assert "WARNING: post-hook failed" in r.stdout and "cannot notify" in r.stdout
    out = c.run("gnt-instance", "list", "--no-headers", "-o", "status", check=True).stdout
    assert out.strip() == "running"
