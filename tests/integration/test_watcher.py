"""``corral-watcher``'s decisions on a one-node cluster (fake hypervisor, no QEMU).

An instance "dies" when its fake state file goes away (what a crashed VM
looks like to the cluster: ``ERROR_down``). The KVM side — ``kvm-ifdown``,
run files, ``USER_down`` — is ``tests/system/test_kvm_watcher.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from corral.testing.cluster import BIN, TempCluster


def _watcher(c: TempCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return c.run("corral-watcher", "--job-age=0", *args)


def _status(c: TempCluster) -> dict[str, str]:
    out = c.run(
        "gnt-instance", "list", "--no-headers", "--separator=|", "-o", "name,status", check=True
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


def _crash(c: TempCluster, name: str) -> None:
    (c.paths.hv_run_dir("fake") / name).unlink()
    assert _status(c)[name] == "ERROR_down"


def test_restarts_dead_instances_and_gives_up_on_a_crash_loop(cluster: TempCluster) -> None:
    c = cluster
    for name, extra in (("web1", []), ("off1", ["--no-start"])):
        c.run("gnt-instance", "add", "-t", "diskless", "--no-nics", *extra, name, check=True)
    state = c.paths.data_dir / "watcher.state"

    r = _watcher(c)
    assert r.returncode == 0, r.stderr
    assert "web1" not in r.stdout and "off1" not in r.stdout  # nothing to do

    _crash(c, "web1")
    r = _watcher(c, "--max-restarts=2")
    assert r.returncode == 0, r.stderr
    assert "web1: ERROR_down, restarting it (job" in r.stdout
    assert "web1: restarted" in r.stdout
    assert "off1" not in r.stdout  # ADMIN_down stays down
    assert _status(c) == {"web1": "running", "off1": "ADMIN_down"}

    # Dead again at every pass: restarted twice in a row, then left alone.
    _crash(c, "web1")
    assert "web1: restarted" in _watcher(c, "--max-restarts=2").stdout
    _crash(c, "web1")
    r = _watcher(c, "--max-restarts=2")
    assert r.returncode == 0, r.stderr
    assert "web1: not restarting: restarted 2 times in a row" in r.stdout
    assert _status(c)["web1"] == "ERROR_down"
    assert json.loads(state.read_text()) == {"restarts": {"web1": 2}}

    # Started by hand, seen running by a pass: the count starts over.
    c.run("gnt-instance", "startup", "web1", check=True)
    assert "web1" not in _watcher(c).stdout
    assert json.loads(state.read_text()) == {"restarts": {}}
    _crash(c, "web1")
    assert "web1: restarted" in _watcher(c, "--max-restarts=2").stdout


def test_a_node_without_master_daemon_has_nothing_to_do(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BIN / "corral-watcher")],
        env={**os.environ, "CORRAL_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "no master daemon on this node" in r.stdout
