"""Instance lifecycle through the real CLI and master daemon (fake hypervisor)."""

from __future__ import annotations

import os

from corral.testing.cluster import TempCluster


def _fake_running(c: TempCluster) -> set[str]:
    d = c.paths.hv_run_dir("fake")
    return set(os.listdir(d)) if d.exists() else set()


def _list(c: TempCluster, *fields: str) -> list[list[str]]:
    out = c.run(
        "gnt-instance", "list", "--no-headers", "--separator=|", "-o", ",".join(fields), check=True
    ).stdout
    return [line.split("|") for line in out.splitlines()]


def test_instance_lifecycle(cluster: TempCluster) -> None:
    c = cluster
    r = c.run(
        "gnt-instance",
        "add",
        "-t",
        "file",
        "--disk",
        "0:size=64M",
        "--net",
        "0:mac=aa:00:00:11:22:33,link=br9",
        "-B",
        "memory=256M,vcpus=2",
        "inst1",
        check=True,
    )
    assert "Starting instance inst1" in r.stdout
    assert _fake_running(c) == {"inst1"}
    assert _list(
        c, "name", "status", "oper_ram", "be/vcpus", "nic.macs", "nic.links", "disk.sizes"
    ) == [["inst1", "running", "256", "2", "aa:00:00:11:22:33", "br9", "64"]]
    # The disk image exists, sized as asked, and is sparse.
    cfg = c.config()
    (disk,) = cfg["disks"].values()
    image = c.paths.host_path(disk["logical_id"][1])
    assert image.stat().st_size == 64 << 20

    c.run("gnt-instance", "shutdown", "inst1", check=True)
    assert _fake_running(c) == set()
    assert _list(c, "name", "status") == [["inst1", "ADMIN_down"]]
    c.run("gnt-instance", "startup", "inst1", check=True)
    assert _list(c, "status") == [["running"]]
    c.run("gnt-instance", "reboot", "-t", "hard", "inst1", check=True)
    c.run("gnt-instance", "reboot", "-t", "full", "inst1", check=True)
    assert _list(c, "status") == [["running"]]

    # Rename needs the instance down; the disk follows (paths use UUIDs).
    assert c.run("gnt-instance", "rename", "inst1", "web1").returncode != 0
    c.run("gnt-instance", "shutdown", "inst1", check=True)
    c.run("gnt-instance", "rename", "inst1", "web1", check=True)
    assert _list(c, "name") == [["web1"]]
    assert image.exists()

    c.run("gnt-instance", "add-tags", "web1", "env:prod", "team-a", check=True)
    assert c.run("gnt-instance", "list-tags", "web1", check=True).stdout.split() == [
        "env:prod",
        "team-a",
    ]
    c.run("gnt-instance", "remove-tags", "web1", "team-a", check=True)
    assert c.run("gnt-instance", "list-tags", "web1", check=True).stdout.split() == ["env:prod"]

    info = c.run("gnt-instance", "info", "web1", check=True).stdout
    assert "State: configured to be down, actual state is down" in info
    assert "aa:00:00:11:22:33" in info and "maxmem: 256" in info

    # Removal without --force and without a terminal refuses and keeps everything.
    r = c.run("gnt-instance", "remove", "web1")
    assert r.returncode != 0 and image.exists()
    c.run("gnt-instance", "remove", "-f", "web1", check=True)
    assert not image.exists()
    assert _list(c, "name") == []
    assert c.run("gnt-cluster", "verify").returncode == 0


def test_submit_and_dry_run(cluster: TempCluster) -> None:
    c = cluster
    before = c.config()["serial_no"]
    r = c.run("gnt-instance", "add", "--dry-run", "inst1", check=True)
    assert "would be created on node1" in r.stdout
    assert c.config()["serial_no"] == before
    assert _list(c, "name") == []

    r = c.run("gnt-instance", "add", "--submit", "--no-start", "inst1", check=True)
    assert r.stdout.startswith("JobID: ")
    job_id = r.stdout.split()[1]
    c.run("gnt-job", "watch", job_id, check=True)
    assert _list(c, "name", "status") == [["inst1", "ADMIN_down"]]
    jobs = c.run("gnt-job", "list", "--no-headers", "-o", "id,status,summary", check=True).stdout
    assert f"{job_id} success INSTANCE_CREATE(inst1)" in " ".join(jobs.split())


def test_list_options(cluster: TempCluster) -> None:
    c = cluster
    for name in ("web1", "web2", "db10", "db9"):
        c.run("gnt-instance", "add", "--no-start", "-B", "memory=1G", name, check=True)
    c.run("gnt-instance", "startup", "web1", check=True)
    # Natural sort order, default fields, header line.
    out = c.run("gnt-instance", "list", check=True).stdout.splitlines()
    assert out[0].split() == ["Instance", "Hypervisor", "OS", "Primary_node", "Status", "Memory"]
    assert [line.split()[0] for line in out[1:]] == ["db9", "db10", "web1", "web2"]
    # +field appends to the defaults; units.
    out = c.run(
        "gnt-instance",
        "list",
        "--no-headers",
        "-o",
        "+be/maxmem",
        "--units",
        "m",
        "web1",
        check=True,
    ).stdout
    assert out.split()[-1] == "1024"
    out = c.run("gnt-instance", "list", "--no-headers", "-o", "name,be/maxmem", check=True)
    assert "1.0G" in out.stdout
    # Filters in Ganeti's query language.
    out = c.run(
        "gnt-instance",
        "list",
        "--no-headers",
        "-o",
        "name",
        "-F",
        'name =~ m/^web/ and not status == "running"',
        check=True,
    ).stdout
    assert out.split() == ["web2"]
    out = c.run(
        "gnt-instance", "list", "--no-headers", "-o", "name", "-F", "admin_up", check=True
    ).stdout
    assert out.split() == ["web1"]
    # Node list shows live data and instance counts.
    out = (
        c.run(
            "gnt-node",
            "list",
            "--no-headers",
            "--separator=,",
            "-o",
            "name,pinst_cnt,role,mtotal",
            check=True,
        )
        .stdout.strip()
        .split(",")
    )
    assert out[:3] == ["node1", "4", "M"] and int(out[3]) > 0
    fields = c.run("gnt-instance", "list-fields", "--no-headers", check=True).stdout
    assert "oper_ram" in fields and "be/vcpus" in fields


def test_cluster_commands(cluster: TempCluster) -> None:
    c = cluster
    assert c.run("gnt-cluster", "getmaster", check=True).stdout.strip() == "node1"
    c.run("gnt-cluster", "modify", "-B", "memory=512M", "-N", "link=br7", check=True)
    info = c.run("gnt-cluster", "info", check=True).stdout
    assert "maxmem: 512" in info and "link: br7" in info
    c.run("gnt-instance", "add", "--no-start", "inst1", check=True)
    assert _list(c, "be/maxmem", "nic.links") == [["512", "br7"]]
    # Cluster defaults apply until the instance overrides them.
    c.run("gnt-cluster", "modify", "-B", "memory=256M", check=True)
    assert _list(c, "be/maxmem") == [["256"]]
    c.run("gnt-cluster", "add-tags", "site:ams", check=True)
    assert c.run("gnt-cluster", "list-tags", check=True).stdout.split() == ["site:ams"]
    # The same commands under `corral`.
    out = c.run("corral", "instance", "list", "--no-headers", "-o", "name", check=True).stdout
    assert out.split() == ["inst1"]
    # Destroy refuses while instances exist, then works.
    assert c.run("gnt-cluster", "destroy", "--yes-do-it").returncode != 0
    c.run("gnt-instance", "remove", "-f", "inst1", check=True)
    c.run("gnt-cluster", "destroy", "--yes-do-it", check=True)
    assert not c.paths.config_file.exists()
    assert c.masterd_pid() is None


def test_verify_reports_drift(cluster: TempCluster) -> None:
    c = cluster
    c.run("gnt-instance", "add", "inst1", check=True)
    assert c.run("gnt-cluster", "verify").returncode == 0
    # The instance dies behind Corral's back: verify says so and fails.
    (c.paths.hv_run_dir("fake") / "inst1").unlink()
    r = c.run("gnt-cluster", "verify")
    assert r.returncode == 1
    assert "instance inst1: instance not running on its primary node node1" in r.stdout
    out = c.run("gnt-instance", "list", "--no-headers", "-o", "status", check=True).stdout
    assert out.strip() == "ERROR_down"
