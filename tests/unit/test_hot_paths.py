"""Behaviour of the paths optimised for the benchmarks (bench/): unchanged results.

* the job queue forgets finished jobs oldest-first without scanning every job;
* ``_nicesort_key`` orders names exactly as the original tuple-based key did;
* an unfiltered query returns the same rows as the general (filtered) path.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from corral import bootstrap
from corral.jobs.queue import JobContext, JobQueue
from corral.jobs.store import JobStore
from corral.master import Master
from corral.opcodes import OpCode, OpTestDelay
from corral.paths import Paths
from corral.query import _nicesort_key


def _reference_key(name: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


@given(st.lists(st.text(alphabet="ab.-0123456789", max_size=10), max_size=30))
def test_nicesort_key_orders_like_the_reference(names: list[str]) -> None:
    assert sorted(names, key=_nicesort_key) == sorted(names, key=_reference_key)


def test_nicesort_key_numbers_compare_numerically() -> None:
    names = ["node10", "node2", "node1", "inst10.example.com", "inst9.example.com", "node01"]
    assert sorted(names, key=_nicesort_key) == [
        "inst9.example.com",
        "inst10.example.com",
        "node1",
        "node01",
        "node2",
        "node10",
    ]


async def _noop(op: OpCode, ctx: JobContext) -> Any:
    return None


def test_forget_finished_keeps_the_newest_finished(tmp_path: Path) -> None:
    async def run() -> None:
        store = JobStore(tmp_path / "jobs.sqlite")
        try:
            q = JobQueue(store, _noop, max_running=lambda: 3)
            finished: list[int] = []
            q.on_finalize.append(lambda job: finished.append(job.id))
            ids = q.submit_many([[OpTestDelay(duration=0)] for _ in range(10)])
            for i in ids:
                job = q.get(i)
                assert job is not None and job.done is not None
                await job.done.wait()
            q.forget_finished(keep=4)
            assert sorted(i for i in ids if i in q.jobs) == sorted(finished[-4:])
            # Forgotten jobs are still there, from SQLite.
            for i in ids:
                job = q.get(i)
                assert job is not None and job.status.value == "success"
            q.archive([finished[-1]])
            assert finished[-1] not in q.jobs
            q.forget_finished(keep=0)
            assert not any(i in q.jobs for i in ids)
            await q.shutdown()
        finally:
            store.close()

    asyncio.run(run())


def test_forget_finished_leaves_unfinished_jobs(tmp_path: Path) -> None:
    async def run() -> None:
        store = JobStore(tmp_path / "jobs.sqlite")
        try:
            q = JobQueue(store, _noop, max_running=lambda: 0)  # nothing starts
            ids = q.submit_many([[OpTestDelay(duration=0)] for _ in range(3)])
            ok, _ = q.cancel(ids[0])
            assert ok
            q.forget_finished(keep=0)
            assert ids[0] not in q.jobs  # canceled while queued: finished
            assert ids[1] in q.jobs and ids[2] in q.jobs
        finally:
            store.close()

    asyncio.run(run())


def test_unfiltered_query_matches_filtered_path(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    bootstrap.init_cluster(paths, "c", node_name="node1")

    async def run() -> None:
        m = Master(paths)
        m.start()
        try:
            fields = ["name", "pip", "role", "pinst_cnt", "mfree", "tags", "name"]
            plain = await m.Query("node", fields)
            everything = ["|", ["=", "name", "node1"], ["!=", "name", "node1"]]
            filtered = await m.Query("node", fields, everything)
            assert plain == filtered
            assert plain["data"][0][0] == [0, "node1"]
        finally:
            await m.stop()

    asyncio.run(run())
