"""The job queue's durable store in SQLite.

Layer: job queue storage (imports ``jobs.model``, ``opcodes``). WAL mode:
every committed transaction survives a ``kill -9`` of the master. Each
status change, log entry and result is one small transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from corral import opcodes
from corral.errors import ConfigError
from corral.jobs.model import FINALIZED, Job, JobStatus, LogEntry, QueuedOp

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    received_ts REAL NOT NULL,
    start_ts REAL,
    end_ts REAL,
    archived INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs(archived, status);
CREATE TABLE IF NOT EXISTS ops (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    start_ts REAL,
    exec_ts REAL,
    end_ts REAL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS log (
    job_id INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    op_idx INTEGER NOT NULL,
    ts_sec INTEGER NOT NULL,
    ts_usec INTEGER NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, serial)
);
"""

_enc = msgspec.json.Encoder()


def _dump(value: Any) -> str:
    return _enc.encode(value).decode()


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"job queue {path} is unusable: {err}") from err

    def close(self) -> None:
        self.db.close()

    def next_id(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()
        return int(row[0]) + 1

    def insert(self, jobs: list[Job]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for job in jobs:
                self.db.execute(
                    "INSERT INTO jobs(id, received_ts, status) VALUES (?,?,?)",
                    (job.id, job.received_ts, job.status.value),
                )
                self.db.executemany(
                    "INSERT INTO ops(job_id, idx, input, status) VALUES (?,?,?,?)",
                    [
                        (job.id, i, opcodes.encode(o.input).decode(), o.status.value)
                        for i, o in enumerate(job.ops)
                    ],
                )

    def save_op(self, job: Job, idx: int) -> None:
        op = job.ops[idx]
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "UPDATE ops SET status=?, result=?, start_ts=?, exec_ts=?, end_ts=? "
                "WHERE job_id=? AND idx=?",
                (
                    op.status.value,
                    _dump(op.result),
                    op.start_ts,
                    op.exec_ts,
                    op.end_ts,
                    job.id,
                    idx,
                ),
            )
            self._save_job_row(job)

    def save_all_ops(self, job: Job) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for idx, op in enumerate(job.ops):
                self.db.execute(
                    "UPDATE ops SET status=?, result=?, start_ts=?, exec_ts=?, end_ts=? "
                    "WHERE job_id=? AND idx=?",
                    (
                        op.status.value,
                        _dump(op.result),
                        op.start_ts,
                        op.exec_ts,
                        op.end_ts,
                        job.id,
                        idx,
                    ),
                )
            self._save_job_row(job)

    def _save_job_row(self, job: Job) -> None:
        self.db.execute(
            "UPDATE jobs SET status=?, start_ts=?, end_ts=?, archived=? WHERE id=?",
            (job.status.value, job.start_ts, job.end_ts, int(job.archived), job.id),
        )

    def add_log(self, job_id: int, op_idx: int, entry: LogEntry) -> None:
        serial, (sec, usec), kind, msg = entry
        self.db.execute(
            "INSERT INTO log VALUES (?,?,?,?,?,?,?)", (job_id, serial, op_idx, sec, usec, kind, msg)
        )

    def set_archived(self, job_ids: list[int]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE jobs SET archived=1 WHERE id=?", [(j,) for j in job_ids])

    def load(self, job_id: int) -> Job | None:
        row = self.db.execute(
            "SELECT id, received_ts, start_ts, end_ts, archived FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None:
            return None
        return self._build(row)

    def _build(self, row: tuple[Any, ...]) -> Job:
        job_id = row[0]
        ops: list[QueuedOp] = []
        for inp, status, result, st, ex, en in self.db.execute(
            "SELECT input, status, result, start_ts, exec_ts, end_ts FROM ops "
            "WHERE job_id=? ORDER BY idx",
            (job_id,),
        ):
            ops.append(
                QueuedOp(
                    input=opcodes.decode(inp),
                    status=JobStatus(status),
                    result=msgspec.json.decode(result) if result else None,
                    start_ts=st,
                    exec_ts=ex,
                    end_ts=en,
                )
            )
        serial = 0
        for s, idx, sec, usec, kind, msg in self.db.execute(
            "SELECT serial, op_idx, ts_sec, ts_usec, type, message FROM log WHERE job_id=? "
            "ORDER BY serial",
            (job_id,),
        ):
            if 0 <= idx < len(ops):
                ops[idx].log.append((s, (sec, usec), kind, msg))
            serial = max(serial, s)
        return Job(
            id=job_id,
            ops=ops,
            received_ts=row[1],
            start_ts=row[2],
            end_ts=row[3],
            archived=bool(row[4]),
            log_serial=serial,
        )

    def load_unfinished(self) -> list[Job]:
        final = tuple(s.value for s in FINALIZED)
        rows = self.db.execute(
            "SELECT id, received_ts, start_ts, end_ts, archived FROM jobs "
            f"WHERE status NOT IN ({','.join('?' * len(final))}) ORDER BY id",
            final,
        ).fetchall()
        return [self._build(r) for r in rows]

    def list_ids(self, archived: bool = False) -> list[int]:
        q = "SELECT id FROM jobs" + ("" if archived else " WHERE archived=0") + " ORDER BY id"
        return [r[0] for r in self.db.execute(q)]

    def finalized_before(self, ts: float) -> list[int]:
        final = tuple(s.value for s in FINALIZED)
        return [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM jobs WHERE archived=0 AND status IN "
                f"({','.join('?' * len(final))}) AND COALESCE(end_ts, received_ts) < ?",
                (*final, ts),
            )
        ]
