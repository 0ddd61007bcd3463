"""Config replication to master candidates.

Layer: master core (imports config writer, rpc client). After every durable
config write the master pushes the new ``config.data`` to every online
master candidate (``upload_config``), remembering what each has. A
candidate that was unreachable or offline gets the newest copy on the next
commit or the next periodic retry, so it catches up when it returns.
Candidates refuse copies older than what they hold, so reordering is
harmless.
"""

from __future__ import annotations

import asyncio
import logging

from corral.config import store
from corral.config.writer import ConfigWriter
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import NodeTarget, RpcClient

log = logging.getLogger(__name__)

RETRY_INTERVAL = 5.0


class Replicator:
    def __init__(self, cfg: ConfigWriter, rpc: RpcClient) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.pushed: dict[str, int] = {}  # node uuid -> serial it holds
        self._kick = asyncio.Event()
        # What is on disk now (the writer is clean when the master starts).
        self._written: tuple[int, bytes] = (cfg.data.serial_no, store.encode(cfg.data))
        self._task: asyncio.Task[None] | None = None
        cfg.listeners.append(self._on_commit)

    def _on_commit(self, serial: int, blob: bytes) -> None:
        self._written = (serial, blob)
        self._kick.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="config-replication")
        self._kick.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def stale_candidates(self) -> list[NodeTarget]:
        d = self.cfg.data
        serial = self._written[0]
        return [
            NodeTarget(n.name, n.primary_ip, n.offline)
            for u, n in d.nodes.items()
            if n.master_candidate
            and not n.offline
            and u != d.cluster.master_node
            and self.pushed.get(u, -1) < serial
        ]

    async def push_once(self) -> dict[str, str | None]:
        """Push the newest written config to every stale candidate; returns failures."""
        targets = self.stale_candidates()
        if not targets:
            return {}
        serial, blob = self._written
        by_name = {n.name: u for u, n in self.cfg.data.nodes.items()}
        res = await self.rpc.call_multi(
            targets, defs.UPLOAD_CONFIG, t.ConfigUploadArgs(serial=serial, data=blob.decode())
        )
        failures: dict[str, str | None] = {}
        for name, r in res.items():
            uuid = by_name.get(name)
            if r.failed:
                failures[name] = r.fail_msg
            elif uuid is not None:
                self.pushed[uuid] = serial
        return failures

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), RETRY_INTERVAL)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                failures = await self.push_once()
            except Exception:
                log.exception("config replication failed")
                continue
            for name, msg in failures.items():
                log.warning("config not replicated to %s: %s", name, msg)
