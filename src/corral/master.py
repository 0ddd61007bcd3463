"""The master: config, job queue, processor and queries wired together.

Layer: master composition (imports everything below it). ``corral-masterd``
serves :class:`Master`'s methods over LUXI; tests can run one in-process.
Method names and argument shapes are Ganeti's LUXI ones.
"""

from __future__ import annotations

import logging
from typing import Any

from corral import lu, opcodes  # noqa: F401  (registers the logical units)
from corral.config.writer import ConfigWriter
from corral.errors import ECode, JobError, ParameterError
from corral.jobs.model import Job
from corral.jobs.processor import Processor
from corral.jobs.queue import JobQueue
from corral.jobs.store import JobStore
from corral.locking import LockManager
from corral.lu.cluster import cluster_info
from corral.paths import Paths
from corral.query import FIELDS, QueryRunner, resolve_fields
from corral.replication import Replicator
from corral.rpc.client import RpcClient, Transport

log = logging.getLogger(__name__)

JOB_INFO_MAX_WAIT = 30.0


class Master:
    def __init__(self, paths: Paths, transport: Transport | None = None) -> None:
        self.paths = paths
        self.cfg = ConfigWriter.load(paths.config_file)
        if transport is None:
            from corral.rpc.https import HttpsTransport

            transport = HttpsTransport(paths, self.cfg.cluster.noded_port)
        self.transport = transport
        self.rpc = RpcClient(transport)
        self.locks = LockManager()
        self.processor = Processor(self.cfg, self.rpc, self.locks, paths)
        self.store = JobStore(paths.queue_db)
        self.queue = JobQueue(
            self.store, self.processor, max_running=lambda: self.cfg.cluster.max_running_jobs
        )
        self.queue.on_finalize.append(lambda job: self.queue.forget_finished())
        self.queries = QueryRunner(self.cfg, self.rpc, self._jobs_for_query)
        self.replicator = Replicator(self.cfg, self.rpc)

    def start(self) -> tuple[int, int]:
        """Recover the job queue after a restart; returns (failed, requeued)."""
        failed, requeued = self.queue.recover()
        self.queue._schedule()
        self.replicator.start()
        return failed, requeued

    async def stop(self) -> None:
        await self.queue.shutdown()
        if self.cfg.dirty:
            await self.cfg.commit()
        await self.replicator.stop()
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()
        self.store.close()

    def _jobs_for_query(self, ids: list[int] | None) -> list[Job]:
        if ids is None:
            ids = self.store.list_ids()
        out = []
        for i in ids:
            job = self.queue.get(i)
            if job is not None:
                out.append(job)
        return out

    # --- LUXI methods --------------------------------------------------------------------

    async def SubmitJob(self, ops: Any) -> int:
        return self.queue.submit_many([self._decode_ops(ops)])[0]

    async def SubmitManyJobs(self, jobs: Any) -> list[list[Any]]:
        if not isinstance(jobs, list):
            raise ParameterError("jobs", "expected a list of jobs")
        out: list[list[Any]] = []
        for ops in jobs:
            try:
                out.append([True, self.queue.submit_many([self._decode_ops(ops)])[0]])
            except (ParameterError, JobError) as err:
                out.append([False, str(err)])
        return out

    @staticmethod
    def _decode_ops(ops: Any) -> list[opcodes.OpCode]:
        if not isinstance(ops, list) or not ops:
            raise ParameterError("ops", "a job is a non-empty list of opcodes")
        return [opcodes.from_obj(o) for o in ops]

    async def WaitForJobChange(
        self,
        job_id: Any,
        fields: Any,
        prev_job_info: Any,
        prev_log_serial: Any,
        timeout: Any = JOB_INFO_MAX_WAIT,
    ) -> Any:
        job_id = _int(job_id, "job_id")
        fields = _strlist(fields, "fields")
        table = FIELDS["job"]
        resolve_fields("job", fields)
        prev_status = None
        if isinstance(prev_job_info, list) and "status" in fields:
            idx = fields.index("status")
            if idx < len(prev_job_info):
                prev_status = prev_job_info[idx]
        serial = prev_log_serial if isinstance(prev_log_serial, int) else 0
        wait = min(
            float(timeout) if isinstance(timeout, int | float) else JOB_INFO_MAX_WAIT,
            JOB_INFO_MAX_WAIT,
        )
        job = await self.queue.wait_change(job_id, prev_status, serial, max(0.0, wait))
        if job is None:
            return "nochange"
        info = [table[f].get(None, job) for f in fields]
        entries = [list(e) for e in job.all_log() if e[0] > serial]
        return [info, entries]

    async def QueryJobs(self, job_ids: Any, fields: Any) -> list[Any]:
        fields = _strlist(fields, "fields")
        table = FIELDS["job"]
        resolve_fields("job", fields)
        if job_ids is not None and not isinstance(job_ids, list):
            raise ParameterError("job_ids", "expected a list of job ids")
        ids = self.store.list_ids() if not job_ids else [_int(j, "job_id") for j in job_ids]
        out: list[Any] = []
        for i in ids:
            job = self.queue.get(i)
            out.append(None if job is None else [table[f].get(None, job) for f in fields])
        return out

    async def CancelJob(self, job_id: Any) -> list[Any]:
        ok, msg = self.queue.cancel(_int(job_id, "job_id"))
        return [ok, msg]

    async def ArchiveJob(self, job_id: Any) -> bool:
        job_id = _int(job_id, "job_id")
        job = self.queue.require(job_id)
        if not job.finalized:
            raise JobError(
                f"job {job_id} is {job.status.value}; only finished jobs can be archived",
                ECode.STATE,
            )
        return bool(self.queue.archive([job_id]))

    async def AutoArchiveJobs(self, age: Any, timeout: Any = None) -> list[int]:
        if not isinstance(age, int | float) or age < 0:
            raise ParameterError("age", "expected a non-negative number of seconds")
        return [self.queue.auto_archive(float(age)), 0]

    async def Query(
        self, what: Any, fields: Any, qfilter: Any = None, names: Any = None
    ) -> dict[str, Any]:
        if not isinstance(what, str):
            raise ParameterError("what", "expected a resource name")
        return await self.queries.query(
            what, _strlist(fields, "fields"), qfilter, _strlist(names, "names") if names else None
        )

    async def QueryFields(self, what: Any, fields: Any = None) -> dict[str, Any]:
        if not isinstance(what, str) or what not in FIELDS:
            raise ParameterError("what", f"unknown resource {what!r}")
        table = FIELDS[what]
        names = _strlist(fields, "fields") if fields else list(table)
        return {"fields": [f.definition() for f in resolve_fields(what, names)]}

    async def QueryClusterInfo(self) -> dict[str, Any]:
        return cluster_info(self.cfg)

    async def QueryTags(self, kind: Any, name: Any) -> list[str]:
        cfg = self.cfg
        if kind == "cluster":
            return sorted(cfg.cluster.tags)
        if not isinstance(name, str):
            raise ParameterError("name", "expected a name")
        if kind == "instance":
            return sorted(cfg.expand_instance(name).tags)
        if kind == "node":
            return sorted(cfg.expand_node(name).tags)
        if kind == "nodegroup":
            return sorted(cfg.expand_group(name).tags)
        if kind == "network":
            return sorted(cfg.expand_network(name).tags)
        raise ParameterError("kind", f"unknown tag kind {kind!r}")

    async def SetDrainFlag(self, flag: Any) -> bool:
        self.queue.drained = bool(flag)
        return True

    async def QueryConfigValues(self, names: Any) -> list[Any]:
        info = cluster_info(self.cfg)
        extra = {
            "cluster_name": self.cfg.cluster.cluster_name,
            "master_node": self.cfg.master_node.name,
            "drain_flag": self.queue.drained,
        }
        return [extra.get(n, info.get(n)) for n in _strlist(names, "names")]

    async def GetLocks(self) -> list[Any]:
        return [list(x) for x in self.locks.info()]


METHODS = frozenset(
    name for name in dir(Master) if name[:1].isupper() and callable(getattr(Master, name))
)


def _int(v: Any, field: str) -> int:
    if isinstance(v, bool):
        raise ParameterError(field, "expected an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    raise ParameterError(field, f"expected an integer, got {v!r}")


def _strlist(v: Any, field: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ParameterError(field, "expected a list of strings")
    return v
