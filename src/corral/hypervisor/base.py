"""The narrow hypervisor interface.

Layer: driver (node side). A hypervisor is constructed with the node's
:class:`~corral.paths.Paths` and knows nothing of the cluster config: it gets
an :class:`~corral.rpc.types.InstanceSpec` with every parameter filled.
Parameter checks are two-phase (Ganeti's idea): :attr:`PARAMS` does the pure
syntax check on the master; :meth:`verify_params` checks the node (files,
binaries) before a start.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from corral.errors import ECode, HotplugError, HypervisorError
from corral.params import ParamGroup
from corral.paths import Paths
from corral.rpc.types import (
    CleanedInstance,
    DiskSpec,
    HotplugArgs,
    HotplugLimit,
    HotplugResult,
    HotplugSupportResult,
    InstanceRuntime,
    InstanceSpec,
    MigrationStatus,
)


class Hypervisor(abc.ABC):
    NAME: ClassVar[str]
    PARAMS: ClassVar[ParamGroup[Any]]
    ATTACHES_NICS: ClassVar[bool] = True  # NICs are plugged into the node's network

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    @classmethod  # noqa: B027
    def check_syntax(cls, filled: dict[str, Any]) -> None:
        """Master-side checks across parameters (after inheritance); raise ParameterError."""

    def verify_params(self, hvparams: dict[str, Any]) -> None:  # noqa: B027
        """Node-side checks of filled parameters; raise HypervisorError."""

    async def recover(self) -> None:  # noqa: B027
        """Called once when the node daemon starts (reattach to running VMs)."""

    async def close(self) -> None:  # noqa: B027
        """Called when the node daemon stops (VMs keep running)."""

    def console_socket(self, name: str) -> str | None:
        """The UNIX socket of the instance's serial console, if it has one."""
        return None

    @abc.abstractmethod
    async def start(self, inst: InstanceSpec, paused: bool = False) -> None: ...

    @abc.abstractmethod
    async def stop(self, inst: InstanceSpec, force: bool, timeout: float) -> None: ...

    @abc.abstractmethod
    async def reboot(self, inst: InstanceSpec, hard: bool, timeout: float) -> None: ...

    @abc.abstractmethod
    async def instance_info(self, name: str) -> InstanceRuntime | None: ...

    @abc.abstractmethod
    async def all_instances_info(self) -> dict[str, InstanceRuntime]: ...

    async def hotplug_supported(self, inst: InstanceSpec) -> HotplugSupportResult:
        """Whether ``inst`` runs and which live device changes it cannot take."""
        reason = f"the {self.NAME} hypervisor cannot change devices of a running VM"
        return HotplugSupportResult(
            running=await self.instance_info(inst.name) is not None,
            limits=[
                HotplugLimit(action=a, dev_type=k, reason=reason)
                for a in ("hotadd", "hotremove", "hotmod")
                for k in ("nic", "disk")
            ],
        )

    async def hotplug(self, args: HotplugArgs) -> HotplugResult:
        """Plug/unplug/re-link one device of a running instance (see HotplugArgs)."""
        raise HotplugError(f"the {self.NAME} hypervisor cannot change devices of a running VM")

    async def disk_grown(self, inst: InstanceSpec, disk: DiskSpec, new_size: int) -> bool:
        """Tell a running ``inst`` that ``disk`` grew to ``new_size`` MiB; False: not running."""
        return False

    # --- migration (Ganeti's MigrationInfo/AcceptInstance/MigrateInstance/Finalize*) ---
    async def migration_info(self, name: str) -> str:
        """What the target needs to rebuild the running machine."""
        raise HypervisorError(f"the {self.NAME} hypervisor cannot migrate", ECode.INVAL)

    async def accept_instance(self, inst: InstanceSpec, info: str, address: str, port: int) -> None:
        """Target: be ready to receive ``inst`` on ``address:port``."""
        raise HypervisorError(f"the {self.NAME} hypervisor cannot migrate", ECode.INVAL)

    async def migrate(self, inst: InstanceSpec, address: str, port: int, live: bool) -> None:
        """Source: start sending; returns at once (see :meth:`migration_status`)."""
        raise HypervisorError(f"the {self.NAME} hypervisor cannot migrate", ECode.INVAL)

    async def migration_status(self, name: str, wait: float = 0.0) -> MigrationStatus:
        raise HypervisorError(f"the {self.NAME} hypervisor cannot migrate", ECode.INVAL)

    async def finalize_migration_dst(self, inst: InstanceSpec, success: bool, live: bool) -> None:
        """Target: after success check it runs; after failure remove what accept made."""
        raise HypervisorError(f"the {self.NAME} hypervisor cannot migrate", ECode.INVAL)

    async def finalize_migration_src(self, inst: InstanceSpec, success: bool, live: bool) -> None:
        """Source: after success stop the old copy; after failure make sure it runs on."""
        raise HypervisorError(f"the {self.NAME} hypervisor cannot migrate", ECode.INVAL)

    async def cleanup_stale(self, keep_markers: list[str]) -> list[CleanedInstance]:
        """Undo what instances whose process is gone left on the node (the watcher).

        ``keep_markers``: instances that belong here, whose record of a user
        shutdown must stay. A hypervisor that leaves nothing behind has
        nothing to do.
        """
        return []

    def memory_used(self, running: dict[str, InstanceRuntime]) -> int:
        return sum(r.memory for r in running.values())
