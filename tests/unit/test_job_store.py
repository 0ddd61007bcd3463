"""Jobs: status computation (Ganeti's CalcStatus) and the SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import ConfigError
from corral.jobs.model import FINALIZED, Job, JobStatus, QueuedOp, ts_pair
from corral.jobs.store import JobStore
from corral.opcodes import OpClusterQuery, OpInstanceCreate, OpTestDelay

S = JobStatus


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(tmp_path / "queue" / "jobs.sqlite")
    try:
        yield s
    finally:
        s.close()


def _job(job_id: int, *statuses: JobStatus) -> Job:
    ops = [
        QueuedOp(input=OpTestDelay(duration=0.1 * i, priority=i), status=st)
        for i, st in enumerate(statuses or (S.QUEUED,))
    ]
    return Job(id=job_id, ops=ops, received_ts=1000.0 + job_id)


# --- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((S.SUCCESS,), S.SUCCESS),
        ((S.SUCCESS, S.SUCCESS, S.SUCCESS), S.SUCCESS),
        ((S.QUEUED,), S.QUEUED),
        ((S.QUEUED, S.QUEUED), S.QUEUED),
        ((S.SUCCESS, S.QUEUED), S.QUEUED),
        ((S.WAITING, S.QUEUED), S.WAITING),
        ((S.SUCCESS, S.WAITING, S.QUEUED), S.WAITING),
        ((S.RUNNING,), S.RUNNING),
        ((S.SUCCESS, S.RUNNING, S.QUEUED), S.RUNNING),
        ((S.SUCCESS, S.ERROR), S.ERROR),
        ((S.ERROR, S.ERROR, S.ERROR), S.ERROR),
        ((S.SUCCESS, S.ERROR, S.ERROR), S.ERROR),
        ((S.CANCELED, S.CANCELED), S.CANCELED),
        ((S.SUCCESS, S.CANCELED), S.CANCELED),
        ((S.CANCELING, S.CANCELING), S.CANCELING),
        ((S.SUCCESS, S.CANCELING), S.CANCELING),
    ],
)
def test_job_status_from_op_statuses(statuses: tuple[JobStatus, ...], expected: JobStatus) -> None:
    job = _job(1, *statuses)
    assert job.status is expected
    assert job.finalized == (expected in FINALIZED)


def test_finalized_statuses() -> None:
    assert {S.SUCCESS, S.ERROR, S.CANCELED} == FINALIZED


def test_job_priority_is_that_of_the_pending_ops() -> None:
    job = _job(1, S.SUCCESS, S.QUEUED, S.QUEUED)  # priorities 0, 1, 2
    assert job.priority == 1
    job.ops[1].status = S.SUCCESS
    assert job.priority == 2
    job.ops[2].status = S.SUCCESS
    assert job.priority == 2  # finished: the last op's


def test_summary_and_log_order() -> None:
    job = Job(
        id=1,
        ops=[
            QueuedOp(input=OpInstanceCreate(instance_name="inst1")),
            QueuedOp(input=OpClusterQuery()),
        ],
    )
    job.ops[1].log.append((2, (5, 0), "message", "second"))
    job.ops[0].log.append((1, (4, 0), "message", "first"))
    job.ops[1].log.append((3, (6, 0), "message", "third"))
    assert job.summary == ["INSTANCE_CREATE(inst1)", "CLUSTER_QUERY"]
    assert [e[3] for e in job.all_log()] == ["first", "second", "third"]


def test_ts_pair() -> None:
    assert ts_pair(12.5) == (12, 500000)
    assert ts_pair(7.0) == (7, 0)


# --- store ------------------------------------------------------------------------------------


def test_next_id(store: JobStore) -> None:
    assert store.next_id() == 1
    store.insert([_job(1), _job(2)])
    assert store.next_id() == 3


def test_insert_load_round_trip(store: JobStore) -> None:
    job = Job(
        id=7,
        ops=[
            QueuedOp(input=OpInstanceCreate(instance_name="inst1", beparams={"memory": "1G"})),
            QueuedOp(input=OpTestDelay(duration=2.0, priority=-10)),
        ],
        received_ts=1234.5,
    )
    store.insert([job])
    back = store.load(7)
    assert back is not None
    assert back.id == 7
    assert back.received_ts == 1234.5
    assert [o.input for o in back.ops] == [o.input for o in job.ops]
    assert [o.status for o in back.ops] == [S.QUEUED, S.QUEUED]
    assert back.status is S.QUEUED
    assert back.priority == -10
    assert back.archived is False
    assert back.start_ts is None and back.end_ts is None
    assert store.load(8) is None


def test_status_results_and_log_round_trip(store: JobStore) -> None:
    job = _job(3, S.QUEUED, S.QUEUED)
    store.insert([job])
    store.add_log(3, 0, (1, (100, 5), "message", "starting"))
    store.add_log(3, 1, (2, (101, 0), "message", "op two"))
    store.add_log(3, 0, (3, (102, 999999), "warning", "careful"))
    job.start_ts = 100.0
    job.ops[0].status = S.SUCCESS
    job.ops[0].result = {"nodes": ["node1"], "n": 1}
    job.ops[0].start_ts, job.ops[0].exec_ts, job.ops[0].end_ts = 100.0, 100.5, 101.0
    store.save_op(job, 0)
    job.ops[1].status = S.ERROR
    job.ops[1].result = {"class": "OpExecError", "message": "boom"}
    job.end_ts = 102.0
    store.save_op(job, 1)

    back = store.load(3)
    assert back is not None
    assert back.status is S.ERROR
    assert back.start_ts == 100.0 and back.end_ts == 102.0
    assert back.ops[0].result == {"nodes": ["node1"], "n": 1}
    assert (back.ops[0].start_ts, back.ops[0].exec_ts, back.ops[0].end_ts) == (100.0, 100.5, 101.0)
    assert back.ops[1].result == {"class": "OpExecError", "message": "boom"}
    assert back.ops[0].log == [
        (1, (100, 5), "message", "starting"),
        (3, (102, 999999), "warning", "careful"),
    ]
    assert back.ops[1].log == [(2, (101, 0), "message", "op two")]
    assert back.log_serial == 3
    assert [e[0] for e in back.all_log()] == [1, 2, 3]


def test_none_result_round_trips(store: JobStore) -> None:
    job = _job(1, S.QUEUED)
    store.insert([job])
    job.ops[0].status = S.SUCCESS
    store.save_op(job, 0)
    back = store.load(1)
    assert back is not None
    assert back.ops[0].result is None
    assert back.status is S.SUCCESS


def test_save_all_ops(store: JobStore) -> None:
    job = _job(1, S.QUEUED, S.QUEUED, S.QUEUED)
    store.insert([job])
    for op in job.ops:
        op.status = S.CANCELED
        op.result = "canceled"
    store.save_all_ops(job)
    back = store.load(1)
    assert back is not None
    assert [o.status for o in back.ops] == [S.CANCELED] * 3
    assert [o.result for o in back.ops] == ["canceled"] * 3
    assert back.status is S.CANCELED


def test_insert_is_all_or_nothing(store: JobStore) -> None:
    store.insert([_job(1)])
    with pytest.raises(sqlite3.IntegrityError):
        store.insert([_job(2), _job(1)])  # 1 already exists
    assert store.list_ids() == [1]
    assert store.load(2) is None


def test_load_unfinished(store: JobStore) -> None:
    jobs = [
        _job(1, S.SUCCESS),
        _job(2, S.QUEUED),
        _job(3, S.SUCCESS, S.RUNNING),
        _job(4, S.ERROR, S.ERROR),
        _job(5, S.WAITING),
        _job(6, S.CANCELED),
        _job(7, S.CANCELING),
    ]
    store.insert(jobs)
    for j in jobs:
        store.save_all_ops(j)
    unfinished = store.load_unfinished()
    assert [j.id for j in unfinished] == [2, 3, 5, 7]
    assert [j.status for j in unfinished] == [S.QUEUED, S.RUNNING, S.WAITING, S.CANCELING]
    # Finishing a job takes it out of the list.
    jobs[1].ops[0].status = S.SUCCESS
    store.save_op(jobs[1], 0)
    assert [j.id for j in store.load_unfinished()] == [3, 5, 7]


def test_archive(store: JobStore) -> None:
    jobs = [_job(1, S.SUCCESS), _job(2, S.ERROR), _job(3, S.QUEUED)]
    jobs[0].end_ts = 2000.0
    jobs[1].end_ts = 3000.0
    store.insert(jobs)
    for j in jobs:
        store.save_all_ops(j)
    assert store.list_ids() == [1, 2, 3]
    assert store.finalized_before(2500.0) == [1]
    assert sorted(store.finalized_before(9999.0)) == [1, 2]
    store.set_archived([1])
    assert store.list_ids() == [2, 3]
    assert store.list_ids(archived=True) == [1, 2, 3]
    back = store.load(1)
    assert back is not None and back.archived is True
    assert store.finalized_before(9999.0) == [2]
    # A later save of the job row keeps the flag it carries.
    back.ops[0].result = "x"
    store.save_op(back, 0)
    reloaded = store.load(1)
    assert reloaded is not None and reloaded.archived is True


def test_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    s = JobStore(path)
    job = _job(1, S.QUEUED)
    s.insert([job])
    s.add_log(1, 0, (1, (1, 0), "message", "hello"))
    s.close()
    s = JobStore(path)
    try:
        back = s.load(1)
        assert back is not None
        assert back.ops[0].log == [(1, (1, 0), "message", "hello")]
        assert s.next_id() == 2
    finally:
        s.close()


def test_unusable_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="unusable"):
        JobStore(path)
