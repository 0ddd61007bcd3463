"""The table of node RPCs, declared once.

Layer: wire (imports ``rpc.types``). Each :class:`RpcCall` names its argument
and result types, whether it goes to one node or many, and its timeout
class. The client (:mod:`corral.rpc.client`) and the node-side dispatcher
(:mod:`corral.backend.dispatch`) are both derived from :data:`CALLS`; a call
without a backend handler is an import-time error, not a runtime surprise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from corral.rpc import types as t

A = TypeVar("A")
R = TypeVar("R")

PROTOCOL_VERSION = 1


class Timeout(enum.Enum):
    """Timeout classes (Ganeti's ``RPC_TMO_*``), in seconds."""

    URGENT = 10.0
    FAST = 60.0
    NORMAL = 180.0
    SLOW = 900.0
    LONG = 3600.0


@dataclass(frozen=True)
class RpcCall(Generic[A, R]):
    name: str
    multi: bool
    timeout: Timeout
    args: type[A]
    result: type[R]
    doc: str


CALLS: dict[str, RpcCall[Any, Any]] = {}


def _call(
    name: str, multi: bool, timeout: Timeout, args: type[A], result: type[R], doc: str
) -> RpcCall[A, R]:
    call = RpcCall(name, multi, timeout, args, result, doc)
    assert name not in CALLS, name
    CALLS[name] = call
    return call


VERSION = _call(
    "version",
    True,
    Timeout.URGENT,
    t.Empty,
    t.VersionResult,
    "Protocol and software version of the node daemon.",
)
NODE_INFO = _call(
    "node_info",
    True,
    Timeout.URGENT,
    t.HypervisorListArgs,
    t.NodeInfo,
    "Memory, CPU and storage totals and free amounts of the node.",
)
ALL_INSTANCES_INFO = _call(
    "all_instances_info",
    True,
    Timeout.URGENT,
    t.HypervisorListArgs,
    t.AllInstancesInfo,
    "Live state of every instance the node's hypervisors run.",
)
INSTANCE_INFO = _call(
    "instance_info",
    False,
    Timeout.URGENT,
    t.InstanceNameArgs,
    t.InstanceInfoResult,
    "Live state of one instance, or null if it does not run.",
)
INSTANCE_START = _call(
    "instance_start",
    False,
    Timeout.NORMAL,
    t.InstanceStartArgs,
    t.Empty,
    "Start an instance on this node.",
)
INSTANCE_SHUTDOWN = _call(
    "instance_shutdown",
    False,
    Timeout.NORMAL,
    t.InstanceStopArgs,
    t.Empty,
    "Stop an instance (soft, then hard after the timeout).",
)
INSTANCE_REBOOT = _call(
    "instance_reboot",
    False,
    Timeout.NORMAL,
    t.InstanceRebootArgs,
    t.Empty,
    "Reboot an instance (soft or hard).",
)
BLOCKDEV_CREATE = _call(
    "blockdev_create",
    False,
    Timeout.SLOW,
    t.DiskCreateArgs,
    t.Empty,
    "Create a disk's backing storage.",
)
BLOCKDEV_REMOVE = _call(
    "blockdev_remove",
    False,
    Timeout.NORMAL,
    t.DiskRemoveArgs,
    t.Empty,
    "Delete a disk's backing storage (only when the user removed it).",
)
BLOCKDEV_GROW = _call(
    "blockdev_grow",
    False,
    Timeout.NORMAL,
    t.DiskGrowArgs,
    t.DiskGrowResult,
    "Grow a disk's backing storage; a running instance sees the new size at once.",
)
HOTPLUG_DEVICE = _call(
    "hotplug_device",
    False,
    Timeout.NORMAL,
    t.HotplugArgs,
    t.HotplugResult,
    "Plug, unplug or re-link a NIC or disk of a running instance.",
)
HOTPLUG_SUPPORTED = _call(
    "hotplug_supported",
    False,
    Timeout.URGENT,
    t.HotplugSupportedArgs,
    t.HotplugSupportResult,
    "Which live device changes the running instance cannot take (error: not running).",
)
MIGRATION_INFO = _call(
    "migration_info",
    False,
    Timeout.FAST,
    t.InstanceNameArgs,
    t.MigrationInfo,
    "The source's description of a running instance, for the migration target.",
)
ACCEPT_INSTANCE = _call(
    "accept_instance",
    False,
    Timeout.NORMAL,
    t.AcceptInstanceArgs,
    t.Empty,
    "Target: start the instance waiting for an incoming migration.",
)
INSTANCE_MIGRATE = _call(
    "instance_migrate",
    False,
    Timeout.FAST,
    t.InstanceMigrateArgs,
    t.Empty,
    "Source: start sending the instance to the target (returns at once).",
)
INSTANCE_MIGRATION_STATUS = _call(
    "instance_get_migration_status",
    False,
    Timeout.URGENT,
    t.MigrationStatusArgs,
    t.MigrationStatus,
    "Source: progress of the running migration.",
)
FINALIZE_MIGRATION_DST = _call(
    "instance_finalize_migration_dst",
    False,
    Timeout.NORMAL,
    t.FinalizeMigrationArgs,
    t.Empty,
    "Target: check the instance runs and finish its network (or clean up on failure).",
)
FINALIZE_MIGRATION_SRC = _call(
    "instance_finalize_migration_src",
    False,
    Timeout.NORMAL,
    t.FinalizeMigrationArgs,
    t.Empty,
    "Source: stop the old copy after success, or resume it after a failure.",
)
NODE_CLEANUP_STALE = _call(
    "node_cleanup_stale",
    True,
    Timeout.NORMAL,
    t.NodeCleanupArgs,
    t.NodeCleanupResult,
    "Run kvm-ifdown for and remove the run files of instances whose process is gone.",
)
HOOKS_RUNNER = _call(
    "hooks_runner",
    True,
    Timeout.NORMAL,
    t.HooksRunArgs,
    t.HooksResult,
    "Run the hook scripts of one hooks path and phase.",
)
BRIDGES_EXIST = _call(
    "bridges_exist",
    False,
    Timeout.URGENT,
    t.BridgesArgs,
    t.BridgesResult,
    "Which of the given bridges are missing on the node (checked before using them)",
)
HV_PARAMS_VERIFY = _call(
    "hypervisor_validate_params",
    True,
    Timeout.URGENT,
    t.HvParamsArgs,
    t.Empty,
    "Validate filled hypervisor parameters on the node (files, binaries, users)",
)
TEST_DELAY = _call(
    "test_delay",
    True,
    Timeout.LONG,
    t.DelayArgs,
    t.Empty,
    "Sleep on the node (gnt-debug delay --on-nodes).",
)
UPLOAD_CONFIG = _call(
    "upload_config",
    True,
    Timeout.FAST,
    t.ConfigUploadArgs,
    t.Empty,
    "Store a newer copy of config.data on a master candidate.",
)
MASTER_INFO = _call(
    "master_info",
    True,
    Timeout.URGENT,
    t.Empty,
    t.MasterInfo,
    "The node's config serial and who it thinks the master is (voting).",
)
UPDATE_CRL = _call(
    "update_crl",
    True,
    Timeout.FAST,
    t.CrlArgs,
    t.Empty,
    "Install a new certificate revocation list and apply it to new connections.",
)
NODE_LEAVE = _call(
    "node_leave",
    False,
    Timeout.FAST,
    t.NodeLeaveArgs,
    t.Empty,
    "The node was removed from the cluster: forget its certificates and config.",
)
MASTER_STOP = _call(
    "master_stop",
    False,
    Timeout.FAST,
    t.Empty,
    t.Empty,
    "Stop the master daemon on this node (the master role moved elsewhere).",
)
OS_DIAGNOSE = _call(
    "os_diagnose",
    True,
    Timeout.FAST,
    t.Empty,
    t.OsDiagnoseResult,
    "Every OS definition in the node's search path, with why it is invalid.",
)
OS_VALIDATE = _call(
    "os_validate",
    True,
    Timeout.NORMAL,
    t.OsValidateArgs,
    t.OsValidateResult,
    "Check an OS name, variant and parameters on the node (runs 'verify' for API 20).",
)
INSTANCE_OS_ADD = _call(
    "instance_os_add",
    False,
    Timeout.LONG,
    t.InstanceOsAddArgs,
    t.OsScriptResult,
    "Run the OS 'create' script for an instance (install or reinstall).",
)
INSTANCE_RUN_RENAME = _call(
    "instance_run_rename",
    False,
    Timeout.SLOW,
    t.InstanceRunRenameArgs,
    t.OsScriptResult,
    "Run the OS 'rename' script after an instance was renamed.",
)
INSTANCE_OS_EXPORT = _call(
    "instance_os_export",
    False,
    Timeout.LONG,
    t.InstanceOsExportArgs,
    t.OsScriptResult,
    "Write one disk through the OS 'export' script into a file on the node.",
)
INSTANCE_OS_IMPORT = _call(
    "instance_os_import",
    False,
    Timeout.LONG,
    t.InstanceOsImportArgs,
    t.OsScriptResult,
    "Restore one disk from a file on the node through the OS 'import' script.",
)
