"""The fake hypervisor: file-backed, like Ganeti's ``hv_fake``.

Layer: driver. An instance "runs" while a state file exists in the node's
``run/corral/fake-hypervisor/`` directory. Enough for the whole instance
lifecycle, for scale tests and for pure logic; never evidence that a KVM
feature works.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Literal

import msgspec

from corral.errors import ECode, HypervisorError
from corral.hypervisor.base import Hypervisor
from corral.params import ParamGroup
from corral.paths import Paths
from corral.rpc.types import InstanceRuntime, InstanceSpec, MigrationStatus


class FakeHvParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    start_delay: Annotated[
        float, msgspec.Meta(ge=0, le=3600, description="Seconds a start takes (emulates boot)")
    ] = 0.0
    stop_delay: Annotated[
        float, msgspec.Meta(ge=0, le=3600, description="Seconds a shutdown takes")
    ] = 0.0
    reboot_behavior: Annotated[
        Literal["reboot", "exit"],
        msgspec.Meta(description="What a reboot does: reboot, or exit (stays down)"),
    ] = "reboot"
    migration_mode: Annotated[
        Literal["live", "non-live"], msgspec.Meta(description="Default migration mode")
    ] = "live"


class _State(msgspec.Struct):
    name: str
    uuid: str
    memory: int
    vcpus: int
    started: float
    state: Literal["running", "paused"] = "running"


_decoder = msgspec.json.Decoder(_State)


class FakeHypervisor(Hypervisor):
    NAME = "fake"
    ATTACHES_NICS = False
    PARAMS = ParamGroup("hv/fake", FakeHvParams)

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        self._incoming: dict[str, str] = {}

    @property
    def state_dir(self) -> str:
        return str(self.paths.hv_run_dir("fake"))

    def _file(self, name: str) -> str:
        if "/" in name or name.startswith("."):
            raise HypervisorError(f"invalid instance name {name!r}")
        return os.path.join(self.state_dir, name)

    async def start(self, inst: InstanceSpec, paused: bool = False) -> None:
        path = self._file(inst.name)
        if os.path.exists(path):
            raise HypervisorError(f"instance {inst.name} is already running")
        hv = FakeHvParams(**inst.hvparams)
        if hv.start_delay:
            await asyncio.sleep(hv.start_delay)
        os.makedirs(self.state_dir, exist_ok=True)
        state = _State(
            name=inst.name,
            uuid=inst.uuid,
            memory=inst.beparams.maxmem,
            vcpus=inst.beparams.vcpus,
            started=time.time(),
            state="paused" if paused else "running",
        )
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(state))
        os.replace(tmp, path)

    async def stop(self, inst: InstanceSpec, force: bool, timeout: float) -> None:
        hv = FakeHvParams(**inst.hvparams)
        if hv.stop_delay and not force:
            await asyncio.sleep(min(hv.stop_delay, timeout))
        try:
            os.unlink(self._file(inst.name))
        except FileNotFoundError:
            pass  # stopping a stopped instance is not an error (idempotent)

    async def reboot(self, inst: InstanceSpec, hard: bool, timeout: float) -> None:
        if await self.instance_info(inst.name) is None:
            raise HypervisorError(f"instance {inst.name} is not running")
        await self.stop(inst, force=hard, timeout=timeout)
        if FakeHvParams(**inst.hvparams).reboot_behavior == "reboot":
            await self.start(inst)

    def _read(self, name: str) -> InstanceRuntime | None:
        try:
            with open(self._file(name), "rb") as f:
                s = _decoder.decode(f.read())
        except (FileNotFoundError, msgspec.DecodeError):
            return None
        return InstanceRuntime(
            name=s.name,
            state=s.state,
            memory=s.memory,
            vcpus=s.vcpus,
            uptime=max(0.0, time.time() - s.started),
        )

    async def instance_info(self, name: str) -> InstanceRuntime | None:
        return self._read(name)

    # Migration: the state file is the whole "machine"; the target writes its own
    # when the source says the memory has arrived.
    async def migration_info(self, name: str) -> str:
        try:
            with open(self._file(name), "rb") as f:
                return f.read().decode()
        except FileNotFoundError:
            raise HypervisorError(f"instance {name} is not running", ECode.STATE) from None

    async def accept_instance(self, inst: InstanceSpec, info: str, address: str, port: int) -> None:
        if os.path.exists(self._file(inst.name)):
            raise HypervisorError(f"instance {inst.name} already runs here", ECode.STATE)
        self._incoming[inst.name] = info

    async def migrate(self, inst: InstanceSpec, address: str, port: int, live: bool) -> None:
        if await self.instance_info(inst.name) is None:
            raise HypervisorError(f"instance {inst.name} is not running", ECode.STATE)

    async def migration_status(self, name: str, wait: float = 0.0) -> MigrationStatus:
        return MigrationStatus(status="completed", total_time_ms=0, downtime_ms=0)

    async def finalize_migration_dst(self, inst: InstanceSpec, success: bool, live: bool) -> None:
        info = self._incoming.pop(inst.name, None)
        if success and info is not None:
            os.makedirs(self.state_dir, exist_ok=True)
            with open(self._file(inst.name), "w") as f:
                f.write(info)

    async def finalize_migration_src(self, inst: InstanceSpec, success: bool, live: bool) -> None:
        if success:
            await self.stop(inst, force=True, timeout=0)

    async def all_instances_info(self) -> dict[str, InstanceRuntime]:
        try:
            names = os.listdir(self.state_dir)
        except FileNotFoundError:
            return {}
        out: dict[str, InstanceRuntime] = {}
        for n in names:
            if n.endswith(".tmp"):
                continue
            r = self._read(n)
            if r is not None:
                out[n] = r
        return out
