"""The job queue through the real master daemon: concurrency, control, recovery."""

from __future__ import annotations

import time
from typing import Any

from corral.client import Client, poll_until
from corral.testing.cluster import TempCluster

DELAY = {"OP_ID": "OP_TEST_DELAY"}


def _job(cl: Client, job_id: int, *fields: str) -> list[Any]:
    (row,) = cl.call("QueryJobs", [[job_id], list(fields)])
    assert row is not None
    return list(row)


def _status(cl: Client, job_id: int) -> str:
    return str(_job(cl, job_id, "status")[0])


def _wait_status(cl: Client, job_id: int, *wanted: str, timeout: float = 30) -> None:
    assert poll_until(lambda: _status(cl, job_id) in wanted, timeout), (
        f"job {job_id} is {_status(cl, job_id)}, wanted {wanted}"
    )


def test_jobs_on_different_instances_overlap(cluster: TempCluster) -> None:
    c = cluster
    for name in ("slow1", "slow2"):
        c.run("gnt-instance", "add", "--no-start", "-H", "fake:start_delay=1.5", name, check=True)
    cl = c.client()
    t0 = time.monotonic()
    ids = [
        cl.submit_job([{"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": n}])
        for n in ("slow1", "slow2")
    ]
    for i in ids:
        cl.wait_for_job(i)
    wall = time.monotonic() - t0
    (s1, e1), (s2, e2) = ([r[0][0], r[1][0]] for r in (_job(cl, i, "opexec", "opend") for i in ids))
    # Both ran at the same time: their execution intervals intersect.
    assert s2 < e1 and s1 < e2
    assert wall < 2.9  # two 1.5 s starts in sequence would need 3 s

    # Two jobs on the *same* instance are serialised by its lock.
    ids = [
        cl.submit_job(
            [{"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": "slow1", "reboot_type": "full"}]
        )
        for _ in range(2)
    ]
    for i in ids:
        cl.wait_for_job(i)
    (_, e1), (s2, _) = ([r[0][0], r[1][0]] for r in (_job(cl, i, "opexec", "opend") for i in ids))
    assert s2 >= e1


def test_cancel_dependencies_priorities_archive(cluster: TempCluster) -> None:
    c = cluster
    c.run("gnt-cluster", "modify", "--max-running-jobs", "1", check=True)
    cl = c.client()
    blocker = cl.submit_job([{**DELAY, "duration": 30}])
    _wait_status(cl, blocker, "running")
    low = cl.submit_job([{**DELAY, "duration": 0, "priority": 10}])
    high = cl.submit_job([{**DELAY, "duration": 0, "priority": -10}])
    dep_ok = cl.submit_job([{**DELAY, "duration": 0, "depends": [[high, ["success"]]]}])
    dep_bad = cl.submit_job([{**DELAY, "duration": 0, "depends": [[blocker, ["success"]]]}])
    queued = cl.submit_job([{**DELAY, "duration": 0}])
    assert _status(cl, queued) == "queued"

    # Cancel a queued job: canceled at once.
    ok, msg = cl.call("CancelJob", [queued])
    assert ok and _status(cl, queued) == "canceled"
    # Cancel the running delay: it stops at its next safe point.
    ok, msg = cl.call("CancelJob", [blocker])
    assert ok
    _wait_status(cl, blocker, "canceled")
    # A finished job cannot be canceled.
    ok, msg = cl.call("CancelJob", [blocker])
    assert not ok and "finished" in msg

    for j in (low, high, dep_ok, dep_bad):
        _wait_status(cl, j, "success", "error")
    # Priority: the high-priority job, submitted later, started first.
    (s_high,) = _job(cl, high, "start_ts")
    (s_low,) = _job(cl, low, "start_ts")
    assert s_high < s_low
    assert _status(cl, dep_ok) == "success"
    # The dependency ended canceled, not success: the dependent job fails and says why.
    assert _status(cl, dep_bad) == "error"
    (res,) = _job(cl, dep_bad, "opresult")[0]
    assert "dependency job" in res["message"] and "canceled" in res["message"]

    # Archive: finished jobs leave the list; running ones cannot be archived.
    r = c.run("gnt-job", "archive", str(dep_ok), check=True)
    listed = c.run("gnt-job", "list", "--no-headers", "-o", "id", check=True).stdout.split()
    assert str(dep_ok) not in listed and str(low) in listed
    c.run("gnt-job", "autoarchive", "all", check=True)
    assert c.run("gnt-job", "list", "--no-headers", check=True).stdout.strip() == ""
    r = c.run("gnt-job", "info", str(low), check=True)  # archived jobs stay queryable
    assert "Status: success" in r.stdout


def test_log_streaming_and_repeat(cluster: TempCluster) -> None:
    r = cluster.run("gnt-debug", "delay", "-r", "3", "0.05", check=True)
    assert [line.split(" ", 5)[-1] for line in r.stdout.splitlines()] == [
        "Test delay iteration 0/2",
        "Test delay iteration 1/2",
        "Test delay iteration 2/2",
    ]


def test_kill_9_master_mid_jobs(cluster: TempCluster) -> None:
    """kill -9 of the master with jobs running, waiting and queued."""
    c = cluster
    c.run("gnt-cluster", "modify", "--max-running-jobs", "4", check=True)
    for i in range(6):
        c.run("gnt-instance", "add", "--no-start", "-H", "fake:start_delay=2", f"i{i}", check=True)
    cl = c.client()
    starts = [
        cl.submit_job([{"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": f"i{i}"}])
        for i in range(6)
    ]
    # A second job on i0 waits for i0's lock; plus plain queued jobs.
    waiting = cl.submit_job([{"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": "i0"}])
    queued = [cl.submit_job([{**DELAY, "duration": 0}]) for _ in range(3)]
    assert poll_until(lambda: sum(_status(cl, j) == "running" for j in starts) >= 3, 10)
    old_pid = c.masterd_pid()
    c.kill_masterd()
    cl.close()

    # The config on disk is intact and loadable at any point.
    cfg_before = c.config()
    c.start_masterd()
    assert c.masterd_pid() not in (None, old_pid)
    cl = c.client()
    statuses = {j: _status(cl, j) for j in [*starts, waiting, *queued]}
    # Jobs that were running end as errors saying the master restarted.
    died = [j for j in starts if statuses[j] == "error"]
    assert died, statuses
    for j in died:
        (res,) = _job(cl, j, "opresult")[0]
        assert "master daemon restarted" in res["message"]
    # Everything else runs again and ends in a definite state.
    for j in [*starts, waiting, *queued]:
        _wait_status(cl, j, "success", "error", "canceled", timeout=60)
    for j in queued:
        assert _status(cl, j) == "success"
    assert c.config()["cluster"]["uuid"] == cfg_before["cluster"]["uuid"]
    # The config is consistent; verify reports only the drift left by the jobs that
    # were cut off (the node daemon may finish a start the dead master asked for).
    r = c.run("gnt-cluster", "verify")
    for line in r.stdout.splitlines():
        if "ERROR" in line:
            assert (
                "instance not running on its primary node" in line
                or "instance should not run, but is running" in line
            ), r.stdout
    assert c.run("gnt-instance", "list", check=True).returncode == 0


def test_concurrent_jobs_keep_each_others_changes(cluster: TempCluster) -> None:
    """Fifty jobs changing the same object at once: none of the changes is lost."""
    cl = cluster.client()
    before = cluster.config()["serial_no"]
    ops = [[{"OP_ID": "OP_TAGS_SET", "kind": "cluster", "tags": [f"t{i}"]}] for i in range(50)]
    results = cl.call("SubmitManyJobs", [ops])
    assert all(ok for ok, _ in results)
    for _, job_id in results:
        cl.wait_for_job(job_id)
    cfg = cluster.config()
    assert sorted(cfg["cluster"]["tags"]) == sorted(f"t{i}" for i in range(50))
    assert cfg["serial_no"] >= before + 50
