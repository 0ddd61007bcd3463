"""The job queue: submit, schedule, wait, cancel, archive, recover.

Layer: job queue (master core). Jobs run as asyncio tasks on the master's
event loop, at most ``max_running`` at once, highest priority (lowest
number) first. Each opcode runs through the :class:`Executor` (the
processor). Every state change is written to SQLite before anyone is told.

On start-up, jobs that were running when the master died end as errors that
say so; queued and waiting jobs are queued again.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from corral.errors import CorralError, ECode, JobCanceled, JobError
from corral.jobs.model import FINALIZED, Job, JobStatus, LogEntry, QueuedOp, ts_pair
from corral.jobs.store import JobStore
from corral.opcodes import OpCode

log = logging.getLogger(__name__)

RESTART_MSG = "master daemon restarted while the job was running; its outcome is unknown"


class JobContext:
    """What an executing opcode may do with its job: log, check for cancel."""

    def __init__(self, queue: JobQueue, job: Job, idx: int) -> None:
        self.queue = queue
        self.job = job
        self.idx = idx

    @property
    def job_id(self) -> int:
        return self.job.id

    def feedback(self, message: str, kind: str = "message") -> None:
        self.queue.add_log(self.job, self.idx, kind, message)

    def check_cancel(self) -> None:
        if self.job.cancel_requested:
            raise JobCanceled(f"job {self.job.id} was canceled")

    def set_waiting(self) -> None:
        op = self.job.ops[self.idx]
        if op.status != JobStatus.WAITING:
            op.status = JobStatus.WAITING
            self.queue.persist_op(self.job, self.idx)

    def set_running(self) -> None:
        op = self.job.ops[self.idx]
        op.status = JobStatus.RUNNING
        op.exec_ts = time.time()
        self.queue.persist_op(self.job, self.idx)


class Executor(Protocol):
    async def __call__(self, op: OpCode, ctx: JobContext) -> Any: ...


class JobQueue:
    def __init__(
        self, store: JobStore, executor: Executor, max_running: Callable[[], int] = lambda: 20
    ) -> None:
        self.store = store
        self.executor = executor
        self.max_running = max_running
        self.jobs: dict[int, Job] = {}  # unfinished, and recently finished
        self._finished: OrderedDict[int, None] = OrderedDict()  # in self.jobs, oldest first
        self._pending: list[tuple[int, int]] = []  # heap of (priority, job id)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._next_id = store.next_id()
        self.drained = False
        self.on_finalize: list[Callable[[Job], Awaitable[None] | None]] = []

    # --- start-up ---------------------------------------------------------------

    def recover(self) -> tuple[int, int]:
        """Finish jobs a dead master left running; requeue the rest."""
        failed = requeued = 0
        for job in self.store.load_unfinished():
            self._events(job)
            if any(o.status in (JobStatus.RUNNING, JobStatus.CANCELING) for o in job.ops):
                now = time.time()
                for i, op in enumerate(job.ops):
                    if op.status in FINALIZED:
                        continue
                    op.status = JobStatus.ERROR
                    op.result = {
                        "class": "OpExecError",
                        "code": ECode.FAULT.value,
                        "message": RESTART_MSG,
                        "fields": {},
                    }
                    op.end_ts = now
                    self._log(job, i, "message", f"Error: {RESTART_MSG}")
                job.end_ts = now
                self.store.save_all_ops(job)
                failed += 1
            else:
                for op in job.ops:
                    if op.status == JobStatus.WAITING:
                        op.status = JobStatus.QUEUED
                self.store.save_all_ops(job)
                self.jobs[job.id] = job
                heapq.heappush(self._pending, (job.priority, job.id))
                requeued += 1
        return failed, requeued

    # --- submission -----------------------------------------------------------------

    def _events(self, job: Job) -> None:
        job.changed = asyncio.Event()
        job.done = asyncio.Event()

    def submit_many(self, op_lists: list[list[OpCode]]) -> list[int]:
        if self.drained:
            raise JobError("the job queue is drained; no new jobs accepted", ECode.STATE)
        jobs: list[Job] = []
        for ops in op_lists:
            if not ops:
                raise JobError("a job needs at least one opcode", ECode.INVAL)
            job_id = self._next_id
            self._next_id += 1
            resolved = [self._resolve_deps(op, job_id) for op in ops]
            job = Job(id=job_id, ops=[QueuedOp(input=op) for op in resolved])
            self._events(job)
            jobs.append(job)
        self.store.insert(jobs)
        for job in jobs:
            self.jobs[job.id] = job
            heapq.heappush(self._pending, (job.priority, job.id))
        self._schedule()
        return [j.id for j in jobs]

    def _resolve_deps(self, op: OpCode, job_id: int) -> OpCode:
        """Turn relative dependencies (-1 = the job submitted just before) into ids."""
        if not op.depends:
            return op
        deps = []
        for dep_id, statuses in op.depends:
            absolute = job_id + dep_id if dep_id < 0 else dep_id
            if absolute <= 0 or absolute >= job_id:
                raise JobError(f"invalid job dependency {dep_id} for job {job_id}", ECode.INVAL)
            deps.append((absolute, statuses))
        return msgspec.structs.replace(op, depends=deps)

    # --- scheduling -------------------------------------------------------------------

    def _schedule(self) -> None:
        while self._pending and len(self._running) < self.max_running():
            _, job_id = heapq.heappop(self._pending)
            job = self.jobs.get(job_id)
            if job is None or job.finalized or job_id in self._running:
                continue
            task = asyncio.create_task(self._run_job(job), name=f"job-{job_id}")
            self._running[job_id] = task

    async def _run_job(self, job: Job) -> None:
        try:
            job.start_ts = job.start_ts or time.time()
            for idx, op in enumerate(job.ops):
                if op.status in FINALIZED:
                    continue
                ok = await self._run_op(job, idx)
                if not ok:
                    self._fail_rest(job, idx)
                    break
        except Exception:  # a bug in the queue itself: never leave the job running
            log.exception("job %s crashed", job.id)
            for i, op in enumerate(job.ops):
                if op.status not in FINALIZED:
                    op.status = JobStatus.ERROR
                    op.result = CorralError("internal error in the job queue").to_wire()
                    self.persist_op(job, i)
        finally:
            job.end_ts = time.time()
            self.store.save_all_ops(job)
            self._running.pop(job.id, None)
            if job.finalized:
                self._finished[job.id] = None
            self._notify(job)
            assert job.done is not None
            job.done.set()
            for cb in self.on_finalize:
                res = cb(job)
                if res is not None:
                    await res
            self._schedule()

    def _fail_rest(self, job: Job, failed_idx: int) -> None:
        status = job.ops[failed_idx].status
        for i in range(failed_idx + 1, len(job.ops)):
            op = job.ops[i]
            op.status = status
            op.result = (
                CorralError("preceding opcode failed").to_wire()
                if status == JobStatus.ERROR
                else None
            )
            op.end_ts = time.time()

    async def _run_op(self, job: Job, idx: int) -> bool:
        op = job.ops[idx]
        ctx = JobContext(self, job, idx)
        op.start_ts = time.time()
        try:
            ctx.check_cancel()
            if op.input.depends:
                ctx.set_waiting()
                await self._wait_deps(op.input)
            ctx.check_cancel()
            result = await self.executor(op.input, ctx)
        except JobCanceled as err:
            op.status = JobStatus.CANCELED
            op.result = err.to_wire()
            self._log(job, idx, "message", str(err))
        except asyncio.CancelledError:
            if not job.cancel_requested:
                raise  # the master is shutting down: the job stays as it was
            op.status = JobStatus.CANCELED
            op.result = JobCanceled(f"job {job.id} was canceled").to_wire()
            self._log(job, idx, "message", f"Job {job.id} canceled while waiting")
        except CorralError as err:
            op.status = JobStatus.ERROR
            op.result = err.to_wire()
            self._log(job, idx, "message", f"Error: {err}")
        except Exception as err:
            log.exception("opcode %s of job %s failed", op.input.op_id, job.id)
            op.status = JobStatus.ERROR
            op.result = CorralError(f"internal error: {err!r}").to_wire()
            self._log(job, idx, "message", f"Error: internal error: {err!r}")
        else:
            op.status = JobStatus.SUCCESS
            op.result = result
        op.end_ts = time.time()
        self.persist_op(job, idx)
        return op.status == JobStatus.SUCCESS

    async def _wait_deps(self, op: OpCode) -> None:
        for dep_id, statuses in op.depends or []:
            dep = self.jobs.get(dep_id)
            if dep is not None and not dep.finalized:
                assert dep.done is not None
                await dep.done.wait()
            if dep is None:
                dep = self.store.load(dep_id)
            if dep is None:
                raise JobError(f"dependency job {dep_id} does not exist", ECode.NOENT)
            if statuses and dep.status.value not in statuses:
                raise JobError(
                    f"dependency job {dep_id} ended with status {dep.status.value}, "
                    f"not one of {', '.join(statuses)}",
                    ECode.STATE,
                )

    # --- bookkeeping ---------------------------------------------------------------------

    def persist_op(self, job: Job, idx: int) -> None:
        self.store.save_op(job, idx)
        self._notify(job)

    def _notify(self, job: Job) -> None:
        if job.changed is not None:
            job.changed.set()
            job.changed = asyncio.Event()

    def _log(self, job: Job, idx: int, kind: str, message: str) -> LogEntry:
        job.log_serial += 1
        entry: LogEntry = (job.log_serial, ts_pair(time.time()), kind, message)
        job.ops[idx].log.append(entry)
        self.store.add_log(job.id, idx, entry)
        return entry

    def add_log(self, job: Job, idx: int, kind: str, message: str) -> None:
        self._log(job, idx, kind, message)
        self._notify(job)

    # --- queries and control ------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.store.load(job_id)
        return job

    def require(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobError(f"job {job_id} not found", ECode.NOENT)
        return job

    async def wait_change(
        self, job_id: int, prev_status: str | None, prev_serial: int, timeout: float
    ) -> Job | None:
        """Wait until the job's status or log moves past what the caller saw."""
        job = self.require(job_id)
        deadline = time.monotonic() + timeout
        while True:
            if job.status.value != prev_status or job.log_serial > prev_serial or job.finalized:
                return job
            if job.changed is None:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(job.changed.wait(), remaining)
            except TimeoutError:
                return None

    def cancel(self, job_id: int) -> tuple[bool, str]:
        job = self.require(job_id)
        status = job.status
        if status in FINALIZED:
            return False, f"Job {job_id} is finished ({status.value}), cannot cancel"
        job.cancel_requested = True
        task = self._running.get(job_id)
        if status == JobStatus.QUEUED and task is None:
            for i, op in enumerate(job.ops):
                op.status = JobStatus.CANCELED
                op.end_ts = time.time()
                op.result = JobCanceled(f"job {job_id} was canceled").to_wire()
                self._log(job, i, "message", f"Job {job_id} canceled")
            job.end_ts = time.time()
            self.store.save_all_ops(job)
            self._finished[job_id] = None
            self._notify(job)
            assert job.done is not None
            job.done.set()
            return True, f"Job {job_id} canceled"
        if status == JobStatus.WAITING and task is not None:
            # Waiting for locks or dependencies: nothing has changed yet.
            for op in job.ops:
                if op.status == JobStatus.WAITING:
                    op.status = JobStatus.CANCELING
            task.cancel()
            return True, f"Job {job_id} will be canceled"
        for i, op in enumerate(job.ops):
            if op.status == JobStatus.RUNNING:
                op.status = JobStatus.CANCELING
                self.persist_op(job, i)
                break
        return True, f"Job {job_id} will be canceled at its next safe point"

    def archive(self, job_ids: list[int]) -> list[int]:
        done: list[int] = []
        for job_id in job_ids:
            job = self.get(job_id)
            if job is None or not job.finalized or job.archived:
                continue
            job.archived = True
            self.jobs.pop(job_id, None)
            self._finished.pop(job_id, None)
            done.append(job_id)
        self.store.set_archived(done)
        return done

    def auto_archive(self, age: float) -> int:
        ids = self.store.finalized_before(time.time() - age)
        return len(self.archive(ids))

    def forget_finished(self, keep: int = 2000) -> None:
        """Drop finished jobs from memory (they stay in SQLite), oldest first.

        O(1) per finished job: the queue remembers finished jobs in the order
        they finished instead of scanning every job it holds.
        """
        while len(self._finished) > keep:
            j, _ = self._finished.popitem(last=False)
            self.jobs.pop(j, None)

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def shutdown(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
