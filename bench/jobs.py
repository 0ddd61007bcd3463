"""Job queue benchmark: no-op job latency and throughput.

Starts a throw-away one-node cluster (fake hypervisor) with its master
daemon and talks to it through the LUXI client library
(:class:`corral.client.Client`), the way ``gnt-debug delay 0`` does:

* ``noop_job_p50``: submit one no-op job (``OP_TEST_DELAY`` with duration 0)
  and wait for it to succeed, many times in a row; milliseconds. Floor: a
  bare LUXI round trip (``QueryConfigValues ["cluster_name"]``) to the same
  master daemon, measured interleaved with the jobs.
* ``jobs_per_s``: submit 1,000 no-op jobs at once (``SubmitManyJobs``), then
  wait until all have finished; jobs per second over several rounds. Floor:
  the rate of bare sequential LUXI round trips (an upper bound for anything
  that needs one request per job).

Targets (issue "cluster core"): p50 ≤ 10 ms and ≥ 300 jobs/s on a 2-core
machine. Context: Ganeti 3.0 measured 0.56 s per sequential no-op job and
2.7 jobs/s.

Run: ``.venv/bin/python bench/jobs.py`` (or ``make bench``); about 30 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Row, figure, machine_note, print_table
from corral.client import FINAL_STATUSES, Client
from corral.testing.cluster import TempCluster

NOOP: dict[str, Any] = {"OP_ID": "OP_TEST_DELAY", "duration": 0}
SEQ_RUNS = 600  # sequential jobs (and as many bare round trips)
WARMUP = 50
BATCH = 1000  # jobs per throughput round
BATCH_ROUNDS = 5
FLOOR_RATE_CALLS = 1000


def bare_round_trip(cl: Client) -> float:
    t = time.perf_counter()
    cl.call("QueryConfigValues", [["cluster_name"]])
    return time.perf_counter() - t


def noop_job(cl: Client) -> float:
    t = time.perf_counter()
    job_id = cl.submit_job([NOOP])
    cl.wait_for_job(job_id)
    return time.perf_counter() - t


def wait_all(cl: Client, ids: list[int]) -> None:
    """Wait until every job has finished; fail unless all succeeded."""
    for job_id in ids:
        while True:
            res = cl.call("WaitForJobChange", [job_id, ["status"], None, 0, 30.0])
            if res != "nochange" and res[0][0] in FINAL_STATUSES:
                break
    statuses = [row[0] for row in cl.call("QueryJobs", [ids, ["status"]])]
    bad = [s for s in statuses if s != "success"]
    if bad:
        raise SystemExit(f"{len(bad)} of {len(ids)} jobs did not succeed: {sorted(set(bad))}")


def throughput_round(cl: Client) -> tuple[float, float]:
    """(jobs/s for the whole round, seconds spent submitting)."""
    t0 = time.perf_counter()
    res = cl.call("SubmitManyJobs", [[[NOOP]] * BATCH])
    t1 = time.perf_counter()
    if not all(ok for ok, _ in res):
        raise SystemExit(f"submission failed: {[r for ok, r in res if not ok][:3]}")
    wait_all(cl, [job_id for _, job_id in res])
    t2 = time.perf_counter()
    return BATCH / (t2 - t0), t1 - t0


def main() -> int:
    note = machine_note()
    cluster = TempCluster(prefix="corral-bench-jobs-")
    try:
        cl = cluster.client()
        for _ in range(WARMUP):
            bare_round_trip(cl)
            noop_job(cl)

        floor_ms: list[float] = []
        job_ms: list[float] = []
        for _ in range(SEQ_RUNS):  # interleaved, so drift hits both alike
            floor_ms.append(bare_round_trip(cl) * 1e3)
            job_ms.append(noop_job(cl) * 1e3)

        rate_floor: list[float] = []
        rates: list[float] = []
        submit_ms: list[float] = []
        for _ in range(BATCH_ROUNDS):
            t = time.perf_counter()
            for _ in range(FLOOR_RATE_CALLS):
                cl.call("QueryConfigValues", [["cluster_name"]])
            rate_floor.append(FLOOR_RATE_CALLS / (time.perf_counter() - t))
            rate, submit = throughput_round(cl)
            rates.append(rate)
            submit_ms.append(submit * 1e3)
        cl.close()
    finally:
        cluster.close()

    rows = [
        Row("bare LUXI round trip (floor)", floor_ms, "ms"),
        Row("no-op job submit->success", job_ms, "ms", "target p50 <= 10 ms; Ganeti 3.0: 560 ms"),
        Row("bare round trips/s (floor)", rate_floor, "calls/s", f"{FLOOR_RATE_CALLS} per round"),
        Row(
            f"throughput, {BATCH} jobs at once",
            rates,
            "jobs/s",
            "target >= 300; Ganeti 3.0: 2.7 jobs/s",
        ),
        Row(f"  of which SubmitManyJobs({BATCH})", submit_ms, "ms"),
    ]
    print_table(f"Job queue benchmark ({note})", rows)
    print()
    med = {r.name: r.median for r in rows}
    print(figure("noop_job_p50", med[rows[1].name], med[rows[0].name]))
    print(figure("jobs_per_s", med[rows[3].name], med[rows[2].name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
