"""Typed arguments and results of node RPCs.

Layer: wire records (imports ``params`` only). The master fills everything a
node needs into these records (parameters already inherited), so a backend
function never reads the cluster config.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from corral.params import BeParams, NicParams


class Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of RPC records: frozen, keyword-only, strict on decode."""


class NicSpec(Record, frozen=True, kw_only=True, tag_field="kind", tag="nic"):
    uuid: str
    name: str | None = None
    index: int
    mac: str
    ip: str | None = None
    nicparams: NicParams
    network: dict[str, str] = {}  # NETWORK_* values when the NIC is on a network


class DiskSpec(Record, frozen=True, kw_only=True, tag_field="kind", tag="disk"):
    uuid: str
    name: str | None = None
    index: int
    dev_type: str
    size: int  # MiB
    mode: Literal["rw", "ro"] = "rw"
    path: str | None = None
    params: dict[str, Any] = {}


class InstanceSpec(Record, frozen=True, kw_only=True):
    """An instance as a node sees it: everything filled in."""

    name: str
    uuid: str
    hypervisor: str
    os: str = ""
    hvparams: dict[str, Any]
    beparams: BeParams
    nics: list[NicSpec] = []
    disks: list[DiskSpec] = []
    tags: list[str] = []
    ctime: float = 0.0
    mtime: float = 0.0
    network_port: int | None = None  # VNC display = port - 5900 (Ganeti's network_port)


class Empty(Record, frozen=True, kw_only=True):
    pass


class VersionResult(Record, frozen=True, kw_only=True):
    protocol: int
    software: str


class NodeInfo(Record, frozen=True, kw_only=True):
    name: str
    memory_total: int  # MiB
    memory_free: int
    memory_dom0: int
    cpu_total: int
    disk_total: int  # MiB, file storage
    disk_free: int
    bootid: str
    time: float


class InstanceStartArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec
    startup_paused: bool = False


class InstanceStopArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec
    timeout: float = 120.0
    force: bool = False


class InstanceRebootArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec
    reboot_type: Literal["soft", "hard", "full"] = "soft"
    timeout: float = 120.0


class InstanceNameArgs(Record, frozen=True, kw_only=True):
    name: str
    hypervisor: str


class HypervisorListArgs(Record, frozen=True, kw_only=True):
    hypervisors: list[str]


class RuntimeNicInfo(Record, frozen=True, kw_only=True):
    """A NIC plugged into a running instance (from the hypervisor's runtime record)."""

    uuid: str
    device_id: str
    slot: str | None = None  # PCI address, "0xc"
    mac: str
    ip: str | None = None
    name: str | None = None
    mode: str = ""
    link: str = ""
    vlan: str = ""
    tap: str | None = None


class RuntimeDiskInfo(Record, frozen=True, kw_only=True):
    """A disk plugged into a running instance."""

    uuid: str
    device_id: str
    slot: str | None = None
    size: int  # MiB, as last told to the hypervisor
    mode: str = "rw"
    path: str = ""


class InstanceRuntime(Record, frozen=True, kw_only=True):
    """Live state of one instance as the hypervisor reports it."""

    name: str
    state: Literal["running", "paused", "shutdown", "crashed", "blocked"]
    memory: int
    vcpus: int
    uptime: float = 0.0
    pid: int | None = None
    # The devices really plugged in (None: the hypervisor does not track them).
    nics: list[RuntimeNicInfo] | None = None
    disks: list[RuntimeDiskInfo] | None = None
    # Drift inside the node: device ids QEMU has that the runtime file lacks,
    # and ids the runtime file lists that QEMU no longer has.
    unrecorded_devices: list[str] = []
    lost_devices: list[str] = []


class InstanceInfoResult(Record, frozen=True, kw_only=True):
    runtime: InstanceRuntime | None


class AllInstancesInfo(Record, frozen=True, kw_only=True):
    instances: dict[str, InstanceRuntime]


HotplugAction = Literal["hotadd", "hotremove", "hotmod"]
HotplugTarget = Literal["nic", "disk"]


class HotplugArgs(Record, frozen=True, kw_only=True):
    """Ganeti's ``hotplug_device(instance, action, dev_type, device, extra, seq)``.

    ``device`` is the NIC/disk as the config has it *after* the change
    (hotadd/hotmod) or before it (hotremove); ``seq`` its index. ``extra``:
    for a disk, the path the node should open if it is not ``device.path``.
    ``unplug_timeout``: how long a hot-remove waits for the guest to let go.
    """

    instance: InstanceSpec
    action: HotplugAction
    dev_type: HotplugTarget
    device: NicSpec | DiskSpec
    extra: str | None = None
    seq: int
    unplug_timeout: float = 15.0


class HotplugResult(Record, frozen=True, kw_only=True):
    device_id: str  # QEMU's id of the device
    slot: str | None = None  # its PCI address
    done: bool = True  # False: nothing to do (already plugged / not plugged)
    detail: str = ""


class HotplugSupportedArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec


class HotplugLimit(Record, frozen=True, kw_only=True):
    """One kind of change that cannot be made live on this instance, and why."""

    action: HotplugAction
    dev_type: HotplugTarget
    reason: str


class HotplugSupportResult(Record, frozen=True, kw_only=True):
    """Whether the instance runs, and which live changes it cannot take."""

    running: bool = True
    limits: list[HotplugLimit] = []


class DiskGrowArgs(Record, frozen=True, kw_only=True):
    """Grow ``disk`` to ``new_size`` MiB; tell the instance's hypervisor when it runs."""

    disk: DiskSpec
    new_size: int
    instance: InstanceSpec | None = None


class DiskGrowResult(Record, frozen=True, kw_only=True):
    size: int  # MiB, the image's new size
    live: bool  # the running instance was told (block_resize)


# --- migration ----------------------------------------------------------------------


class MigrationInfo(Record, frozen=True, kw_only=True):
    """What the target needs to rebuild the running machine (KVM: the runtime file)."""

    data: str


class AcceptInstanceArgs(Record, frozen=True, kw_only=True):
    """Start the target side paused, waiting for the memory on ``address:port``.

    ``instance`` carries the config's view (disk paths as cluster-wide paths);
    the machine itself comes from ``info``, so it is identical to the source's.
    """

    instance: InstanceSpec
    info: MigrationInfo
    address: str
    port: int


class MigrationStatusArgs(Record, frozen=True, kw_only=True):
    """``wait``: return as soon as the migration ends, or after this many seconds
    with the progress (a long poll: completion is seen at once, not at the next poll)."""

    name: str
    hypervisor: str
    wait: float = 0.0


class InstanceMigrateArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec
    address: str
    port: int
    live: bool = True


class MigrationStatus(Record, frozen=True, kw_only=True):
    """QEMU's ``query-migrate``, typed."""

    status: str  # none, setup, active, postcopy-active, completed, failed, cancelled, …
    transferred: int = 0  # bytes
    remaining: int = 0
    total: int = 0
    mbps: float = 0.0
    total_time_ms: int | None = None
    downtime_ms: int | None = None
    error: str = ""


class FinalizeMigrationArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec
    success: bool
    live: bool = True


# --- the watcher: leftovers of dead instances ------------------------------------------


class NodeCleanupArgs(Record, frozen=True, kw_only=True):
    """Clean up after instances whose hypervisor process is gone (the watcher).

    ``instances``: those the config places on this node (primary). Their
    user-shutdown markers are kept (they are what makes them ``USER_down``);
    everything else a dead instance left is removed.
    """

    hypervisors: list[str]
    instances: list[str]


class CleanedInstance(Record, frozen=True, kw_only=True):
    """What one dead instance left on the node, and what became of it."""

    name: str
    hypervisor: str
    taps: list[str] = []  # kvm-ifdown (context shutdown) ran for these
    files: list[str] = []  # removed, relative to the hypervisor's run dir
    errors: list[str] = []  # failed kvm-ifdowns, NIC records without data, files left
    marker_kept: bool = False  # a user shutdown: the instance stays USER_down


class NodeCleanupResult(Record, frozen=True, kw_only=True):
    cleaned: list[CleanedInstance]


class DiskCreateArgs(Record, frozen=True, kw_only=True):
    disk: DiskSpec
    instance_name: str


class DiskRemoveArgs(Record, frozen=True, kw_only=True):
    disk: DiskSpec


class HooksRunArgs(Record, frozen=True, kw_only=True):
    hpath: str
    phase: Literal["pre", "post"]
    env: dict[str, str]


class HookScriptResult(Record, frozen=True, kw_only=True):
    script: str
    status: Literal["success", "fail", "skip"]
    output: str


class HooksResult(Record, frozen=True, kw_only=True):
    results: list[HookScriptResult]


class BridgesArgs(Record, frozen=True, kw_only=True):
    bridges: list[str]


class BridgesResult(Record, frozen=True, kw_only=True):
    missing: list[str]


class HvParamsArgs(Record, frozen=True, kw_only=True):
    hypervisor: str
    hvparams: dict[str, Any]


class DelayArgs(Record, frozen=True, kw_only=True):
    duration: float


class ConfigUploadArgs(Record, frozen=True, kw_only=True):
    """A master candidate's copy of ``config.data``; ignored unless newer."""

    serial: int
    data: str


class MasterInfo(Record, frozen=True, kw_only=True):
    """What a node believes about the cluster (for master voting)."""

    node_name: str
    cluster_name: str | None = None
    config_serial: int | None = None  # None: the node holds no config copy
    master_node: str | None = None
    cert_not_after: float | None = None  # expiry of the node's certificate (UNIX time)


class CrlArgs(Record, frozen=True, kw_only=True):
    crl_pem: str


class NodeLeaveArgs(Record, frozen=True, kw_only=True):
    """Forget the cluster: drop certificates, config copy and identity."""

    cluster_name: str


# --- OS definitions (Ganeti's OS API; corral.osapi on the node) ------------------------


class OsParameter(Record, frozen=True, kw_only=True):
    """One line of an OS definition's ``parameters.list``."""

    name: str
    description: str = ""


class OsDefinition(Record, frozen=True, kw_only=True):
    """One OS directory found in a node's search path, valid or not (with why not)."""

    name: str
    path: str
    valid: bool
    diagnose: str = ""  # why the definition is invalid; empty when valid
    api_versions: list[int] = []  # as declared in ganeti_api_version
    variants: list[str] = []
    parameters: list[OsParameter] = []


class OsDiagnoseResult(Record, frozen=True, kw_only=True):
    """Every OS directory of the node, in search-path order (the first of a name wins)."""

    oses: list[OsDefinition]


class OsValidateArgs(Record, frozen=True, kw_only=True):
    os_name: str  # "name" or "name+variant"
    osparams: dict[str, str] = {}
    required: bool = True  # False: an OS the node does not have is not an error
    force_variant: bool = False
    checks: list[Literal["parameters"]] = msgspec.field(default_factory=lambda: ["parameters"])


class OsValidateResult(Record, frozen=True, kw_only=True):
    definition: OsDefinition | None  # None: not found (only when not required)


class InstanceOsAddArgs(Record, frozen=True, kw_only=True):
    """Run the ``create`` script of ``instance.os`` (which may be a new OS on reinstall)."""

    instance: InstanceSpec
    osparams: dict[str, str] = {}
    reinstall: bool = False
    debug: int = 0


class InstanceRunRenameArgs(Record, frozen=True, kw_only=True):
    instance: InstanceSpec  # already with its new name
    old_name: str
    osparams: dict[str, str] = {}
    debug: int = 0


class InstanceOsExportArgs(Record, frozen=True, kw_only=True):
    """Stream one disk through the OS ``export`` script into ``dest`` (a file on the node)."""

    instance: InstanceSpec
    disk_index: int
    dest: str  # cluster-wide path under the export directory
    osparams: dict[str, str] = {}
    debug: int = 0


class InstanceOsImportArgs(Record, frozen=True, kw_only=True):
    """Feed ``source`` (a file on the node) to the OS ``import`` script of one disk."""

    instance: InstanceSpec
    disk_index: int
    source: str  # cluster-wide path under the export directory
    osparams: dict[str, str] = {}
    debug: int = 0


class OsScriptResult(Record, frozen=True, kw_only=True):
    log: str  # the script's log file on the node
    size_hint: int | None = None  # export: bytes announced on EXP_SIZE_FD
    size: int | None = None  # export: bytes written to the destination
