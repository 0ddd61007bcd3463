"""Jobs and their opcodes in memory, with Ganeti's statuses.

Layer: job queue (imports ``opcodes``). A job's status is computed from its
opcodes' statuses the way Ganeti's ``CalcStatus`` does.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any

from corral.opcodes import OpCode


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    CANCELING = "canceling"
    RUNNING = "running"
    CANCELED = "canceled"
    SUCCESS = "success"
    ERROR = "error"


FINALIZED = frozenset({JobStatus.CANCELED, JobStatus.SUCCESS, JobStatus.ERROR})

LogEntry = tuple[int, tuple[int, int], str, str]  # Ganeti: (serial, (sec, usec), type, msg)


def ts_pair(ts: float) -> tuple[int, int]:
    sec = int(ts)
    return sec, int((ts - sec) * 1e6)


@dataclass
class QueuedOp:
    input: OpCode
    status: JobStatus = JobStatus.QUEUED
    result: Any = None
    log: list[LogEntry] = field(default_factory=list)
    start_ts: float | None = None
    exec_ts: float | None = None
    end_ts: float | None = None

    @property
    def priority(self) -> int:
        return self.input.priority


@dataclass
class Job:
    id: int
    ops: list[QueuedOp]
    received_ts: float = field(default_factory=time.time)
    start_ts: float | None = None
    end_ts: float | None = None
    archived: bool = False
    log_serial: int = 0
    cancel_requested: bool = False
    changed: asyncio.Event | None = None
    done: asyncio.Event | None = None

    @property
    def priority(self) -> int:
        pending = [o.priority for o in self.ops if o.status not in FINALIZED]
        return min(pending) if pending else self.ops[-1].priority

    @property
    def status(self) -> JobStatus:
        statuses = [o.status for o in self.ops]
        if all(s == JobStatus.SUCCESS for s in statuses):
            return JobStatus.SUCCESS
        if JobStatus.ERROR in statuses:
            return JobStatus.ERROR
        if JobStatus.CANCELED in statuses:
            return JobStatus.CANCELED
        if JobStatus.CANCELING in statuses:
            return JobStatus.CANCELING
        if JobStatus.RUNNING in statuses:
            return JobStatus.RUNNING
        if JobStatus.WAITING in statuses:
            return JobStatus.WAITING
        return JobStatus.QUEUED

    @property
    def finalized(self) -> bool:
        return self.status in FINALIZED

    @property
    def summary(self) -> list[str]:
        return [o.input.summary() for o in self.ops]

    def all_log(self) -> list[LogEntry]:
        return sorted((e for o in self.ops for e in o.log), key=lambda e: e[0])
