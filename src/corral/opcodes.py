"""Opcodes: typed, tagged records of what a job asks for.

Layer: bottom (imports ``errors``, ``params``). Each opcode is a frozen
msgspec struct tagged with Ganeti's ``OP_ID`` (``OP_INSTANCE_CREATE``), so a
job's JSON looks like Ganeti's. Validation happens on decode
(:func:`decode`): a bad value raises :class:`~corral.errors.ParameterError`
naming the field, with ``ECODE_INVAL``. Every opcode carries ``dry_run``;
logical units that change something honour it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from corral.errors import ParameterError, ProtocolError

PRIO_HIGHEST = -20
PRIO_LOWEST = 19
PRIO_DEFAULT = 0

HOSTNAME_RE = (
    r"^(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*$"
)
MAC_RE = r"^(auto|generate|[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5})$"
TAG_RE = r"^[\w.+*/:@-]{1,128}$"
IP_RE = r"^(pool|none|[0-9.]{7,15}|[0-9a-fA-F:]{2,39})$"

Name = Annotated[str, msgspec.Meta(pattern=HOSTNAME_RE, description="A host name")]
Tag = Annotated[str, msgspec.Meta(pattern=TAG_RE)]
Priority = Annotated[int, msgspec.Meta(ge=PRIO_HIGHEST, le=PRIO_LOWEST)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)]
SizeMiB = Annotated[int, msgspec.Meta(ge=1, le=1024**3)]
ParamDict = dict[str, Any]
JobStatusName = Literal["queued", "waiting", "canceling", "running", "canceled", "success", "error"]
TagKind = Literal["cluster", "node", "instance", "nodegroup", "network"]


def _op_id(class_name: str) -> str:
    """``OpInstanceCreate`` → ``OP_INSTANCE_CREATE`` (Ganeti's naming)."""
    return "OP_" + re.sub(r"(?<!^)(?=[A-Z])", "_", class_name[2:]).upper()


class OpCode(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="OP_ID",
    tag=_op_id,
):
    """Fields every opcode has (Ganeti's generic opcode parameters)."""

    dry_run: bool = False
    debug_level: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    priority: Priority = PRIO_DEFAULT
    depends: list[tuple[int, list[JobStatusName]]] | None = None
    comment: str | None = None
    reason: list[tuple[str, str, float]] = []

    # Which field names the object the opcode is about (for summaries).
    DSC_FIELD: ClassVar[str | None] = None

    @property
    def op_id(self) -> str:
        return _op_id(type(self).__name__)

    def summary(self) -> str:
        name = self.op_id[3:]
        dsc = type(self).DSC_FIELD
        if dsc:
            value = getattr(self, dsc, None)
            if isinstance(value, list):
                value = ",".join(map(str, value))
            if value is not None:
                return f"{name}({value})"
        return name


# --- cluster -------------------------------------------------------------------


class OpClusterQuery(OpCode, frozen=True, kw_only=True):
    pass


class OpClusterVerify(OpCode, frozen=True, kw_only=True):
    skip_checks: list[str] = []


class OpClusterDestroy(OpCode, frozen=True, kw_only=True):
    pass


class OpClusterSetParams(OpCode, frozen=True, kw_only=True):
    hvparams: dict[str, ParamDict] | None = None
    beparams: ParamDict | None = None
    nicparams: ParamDict | None = None
    diskparams: dict[str, ParamDict] | None = None
    enabled_hypervisors: list[str] | None = None
    enabled_disk_templates: list[str] | None = None
    candidate_pool_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    mac_prefix: (
        Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$")] | None
    ) = None
    max_running_jobs: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    hotplug_by_default: bool | None = None
    ovn_nb: str | None = None  # "" switches OVN off; the LU checks the remote's form


class OpClusterCleanupStale(OpCode, frozen=True, kw_only=True):
    """Undo what dead instances left on nodes: kvm-ifdown, run files (the watcher).

    ``nodes`` empty: every online node. Not in Ganeti, whose watcher runs on
    each node; here the watcher runs where the master is and reaches the
    nodes through this opcode.
    """

    nodes: list[Name] = []


class OpClusterSyncOvn(OpCode, frozen=True, kw_only=True):
    """Bring OVN ports in line with where instances run (the watcher; Corral only).

    Every NIC in mode ``ovn`` gets its logical switch port, bound to the one
    node its instance runs on (else its primary node); ports Corral made for
    NICs no longer configured are deleted. Instances a job works on are
    waited for (shared instance locks).
    """

    dry_run: bool = False


# --- nodes -----------------------------------------------------------------------

JOIN_RE = r"^sha256:[0-9a-f]{64}:[A-Za-z0-9_-]{16,128}$"


class OpNodeAdd(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "node_name"
    node_name: Name
    primary_ip: Annotated[str, msgspec.Meta(pattern=IP_RE)]
    secondary_ip: Annotated[str, msgspec.Meta(pattern=IP_RE)] | None = None
    join: Annotated[str, msgspec.Meta(pattern=JOIN_RE)] | None = None
    readd: bool = False
    group: str | None = None
    master_capable: bool = True
    vm_capable: bool = True


class OpNodeRemove(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "node_name"
    node_name: Name


class OpNodeSetParams(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "node_name"
    node_name: Name
    master_candidate: bool | None = None
    offline: bool | None = None
    drained: bool | None = None
    master_capable: bool | None = None
    vm_capable: bool | None = None
    force: bool = False
    auto_promote: bool = False


class OpTagsGet(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "name"
    kind: TagKind
    name: str | None = None


class OpTagsSet(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "name"
    kind: TagKind
    name: str | None = None
    tags: list[Tag]


class OpTagsDel(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "name"
    kind: TagKind
    name: str | None = None
    tags: list[Tag]


# --- networks --------------------------------------------------------------------

NETWORK_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NetworkName = Annotated[str, msgspec.Meta(pattern=NETWORK_NAME_RE)]


class OpNetworkAdd(OpCode, frozen=True, kw_only=True):
    """A new network (Ganeti's fields; ``network`` is required, as in Ganeti).

    Addresses are checked by the LU (CIDR form, gateway inside the network).
    ``ovn_switch``: the OVN logical switch backing it (Corral's; NIC mode ``ovn``).
    Corral keeps no IP pool: ``add_reserved_ips`` is refused when not empty and
    ``conflicts_check`` (Ganeti reserves node IPs in the pool) has nothing to do.
    """

    DSC_FIELD = "network_name"
    network_name: NetworkName
    network: str
    gateway: str | None = None
    network6: str | None = None
    gateway6: str | None = None
    mac_prefix: str | None = None
    add_reserved_ips: list[str] | None = None
    conflicts_check: bool = True
    tags: list[Tag] = []
    ovn_switch: NetworkName | None = None


class OpNetworkRemove(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "network_name"
    network_name: str
    force: bool = False


class OpNetworkSetParams(OpCode, frozen=True, kw_only=True):
    """Change a network; ``"none"`` clears a value (Ganeti's ``VALUE_NONE``)."""

    DSC_FIELD = "network_name"
    network_name: str
    gateway: str | None = None
    network6: str | None = None
    gateway6: str | None = None
    mac_prefix: str | None = None
    add_reserved_ips: list[str] | None = None
    remove_reserved_ips: list[str] | None = None


class OpNetworkConnect(OpCode, frozen=True, kw_only=True):
    """Connect a network to one node group with the NIC parameters its NICs get there.

    Mode/link not given: ``ovn``/``br-int`` for a network with an OVN switch,
    else the group's NIC defaults.
    """

    DSC_FIELD = "network_name"
    group_name: str
    network_name: str
    network_mode: str | None = None
    network_link: str | None = None
    network_vlan: str | None = None
    conflicts_check: bool = True


class OpNetworkDisconnect(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "network_name"
    group_name: str
    network_name: str


# --- debug -----------------------------------------------------------------------


class OpTestDelay(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "duration"
    duration: Seconds
    on_master: bool = True
    on_nodes: list[Name] = []
    repeat: Annotated[int, msgspec.Meta(ge=0, le=10000)] = 0
    no_locks: bool = True
    interruptible: bool = False


# --- instances -------------------------------------------------------------------


class NicDef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A NIC as given to instance creation (Ganeti's NIC dict)."""

    mac: Annotated[str, msgspec.Meta(pattern=MAC_RE)] = "auto"
    ip: Annotated[str, msgspec.Meta(pattern=IP_RE)] | None = None
    mode: str | None = None
    link: str | None = None
    vlan: str | None = None
    network: str | None = None
    name: str | None = None


class DiskDef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    size: SizeMiB
    mode: Literal["rw", "ro"] = "rw"
    name: str | None = None
    spindles: Annotated[int, msgspec.Meta(ge=0)] | None = None


class OpInstanceCreate(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    mode: Literal["create", "import"] = "create"
    disk_template: str = "diskless"
    disks: list[DiskDef] = []
    nics: list[NicDef] = []
    os_type: str = ""
    pnode: Name | None = None
    snode: Name | None = None
    iallocator: str | None = None
    hypervisor: str | None = None
    hvparams: ParamDict = {}
    beparams: ParamDict = {}
    osparams: ParamDict = {}
    start: bool = True
    ip_check: bool = False
    name_check: bool = False
    wait_for_sync: bool = True
    no_install: bool = False
    tags: list[Tag] = []
    conflicts_check: bool = True
    force_variant: bool = False


class OpInstanceRemove(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    ignore_failures: bool = False
    shutdown_timeout: Seconds = 120.0


class OpInstanceStartup(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    force: bool = False
    hvparams: ParamDict = {}
    beparams: ParamDict = {}
    ignore_offline_nodes: bool = False
    startup_paused: bool = False


class OpInstanceShutdown(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    force: bool = False
    timeout: Seconds = 120.0
    ignore_offline_nodes: bool = False
    no_remember: bool = False


class OpInstanceReboot(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    reboot_type: Literal["soft", "hard", "full"] = "soft"
    ignore_secondaries: bool = False
    shutdown_timeout: Seconds = 120.0


class OpInstanceRename(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    new_name: Name
    ip_check: bool = False
    name_check: bool = False


class OpInstanceReinstall(OpCode, frozen=True, kw_only=True):
    DSC_FIELD = "instance_name"
    instance_name: Name
    os_type: str | None = None  # None: keep the instance's OS
    osparams: ParamDict | None = None  # merged into the instance's; "default" removes one
    force_variant: bool = False


class OpInstanceConsole(OpCode, frozen=True, kw_only=True):
    """How to reach an instance's console (Ganeti's ``OP_INSTANCE_CONSOLE``)."""

    DSC_FIELD = "instance_name"
    instance_name: Name


DeviceAction = Literal["add", "remove", "modify"]
DeviceIdent = int | Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
DeviceMod = tuple[DeviceAction, DeviceIdent, ParamDict]
"""One NIC/disk change, Ganeti's ``(action, identifier, params)``: the identifier is
an index (``-1``: the last one; for ``add``, where to insert), a name or a UUID."""


class OpInstanceSetParams(OpCode, frozen=True, kw_only=True):
    """Change an instance; NIC and disk changes go live on a running KVM instance.

    ``hotplug``: ``None`` follows the cluster's ``hotplug_by_default`` (hotplug
    when possible, else warn and apply at the next start); ``True`` fails the
    operation when the change cannot be made live; ``False`` never hotplugs.
    ``hotplug_if_possible`` is Ganeti's spelling of the default.
    """

    DSC_FIELD = "instance_name"
    instance_name: Name
    nics: list[DeviceMod] = []
    disks: list[DeviceMod] = []
    beparams: ParamDict = {}
    hvparams: ParamDict = {}
    osparams: ParamDict = {}
    hotplug: bool | None = None
    hotplug_if_possible: bool = False
    force: bool = False
    wait_for_sync: bool = True


class OpInstanceGrowDisk(OpCode, frozen=True, kw_only=True):
    """Grow one disk by ``amount`` MiB (or to ``amount`` with ``absolute``); live if running."""

    DSC_FIELD = "instance_name"
    instance_name: Name
    disk: Annotated[int, msgspec.Meta(ge=0, le=15)]
    amount: SizeMiB
    absolute: bool = False
    wait_for_sync: bool = True
    ignore_ipolicy: bool = False


MigrationMode = Literal["live", "non-live"]


class OpInstanceMigrate(OpCode, frozen=True, kw_only=True):
    """Live (or non-live) migration to another node; shared storage or diskless only.

    ``mode``/``live``: Ganeti's two spellings (``live=False`` = ``non-live``);
    neither: the instance's ``migration_mode`` hypervisor parameter. ``cleanup``
    resolves a half-finished migration from what both nodes report.
    """

    DSC_FIELD = "instance_name"
    instance_name: Name
    mode: MigrationMode | None = None
    live: bool | None = None
    target_node: Name | None = None
    cleanup: bool = False
    allow_failover: bool = False
    iallocator: str | None = None
    ignore_ipolicy: bool = False
    allow_runtime_changes: bool = True


class OpInstanceFailover(OpCode, frozen=True, kw_only=True):
    """Stop on the primary (if reachable), start on the target: shared storage only."""

    DSC_FIELD = "instance_name"
    instance_name: Name
    ignore_consistency: bool = False
    shutdown_timeout: Seconds = 120.0
    target_node: Name | None = None
    iallocator: str | None = None
    ignore_ipolicy: bool = False


class OpNodeMigrate(OpCode, frozen=True, kw_only=True):
    """Migrate every primary instance off a node (one job per instance)."""

    DSC_FIELD = "node_name"
    node_name: Name
    mode: MigrationMode | None = None
    live: bool | None = None
    target_node: Name | None = None
    iallocator: str | None = None
    ignore_ipolicy: bool = False


class OpNodeEvacuate(OpCode, frozen=True, kw_only=True):
    """Move instances off a node; only ``primary-only`` exists with shared storage."""

    DSC_FIELD = "node_name"
    node_name: Name
    mode: Literal["primary-only", "secondary-only", "all"] = "all"
    remote_node: Name | None = None
    iallocator: str | None = None
    early_release: bool = False


class OpInstanceQueryData(OpCode, frozen=True, kw_only=True):
    instances: list[str] = []
    static: bool = False
    use_locking: bool = False


# --- operating systems -------------------------------------------------------------

OsField = Literal[
    "name",
    "valid",
    "variants",
    "parameters",
    "api_versions",
    "node_status",
    "hidden",
    "blacklisted",
    "os_hvp",
    "osparams",
]


class OpOsDiagnose(OpCode, frozen=True, kw_only=True):
    """Ganeti's OS query: one row per OS, the values of ``output_fields`` in order."""

    output_fields: list[OsField]
    names: list[str] = []


AnyOpCode = (
    OpClusterQuery
    | OpNodeAdd
    | OpNodeRemove
    | OpNodeSetParams
    | OpClusterVerify
    | OpClusterDestroy
    | OpClusterSetParams
    | OpClusterCleanupStale
    | OpClusterSyncOvn
    | OpTagsGet
    | OpTagsSet
    | OpTagsDel
    | OpNetworkAdd
    | OpNetworkRemove
    | OpNetworkSetParams
    | OpNetworkConnect
    | OpNetworkDisconnect
    | OpTestDelay
    | OpInstanceCreate
    | OpInstanceRemove
    | OpInstanceStartup
    | OpInstanceShutdown
    | OpInstanceReboot
    | OpInstanceRename
    | OpInstanceQueryData
    | OpInstanceConsole
    | OpInstanceReinstall
    | OpInstanceSetParams
    | OpInstanceGrowDisk
    | OpInstanceMigrate
    | OpInstanceFailover
    | OpNodeMigrate
    | OpNodeEvacuate
    | OpOsDiagnose
)

OP_CLASSES: dict[str, type[OpCode]] = {_op_id(cls.__name__): cls for cls in AnyOpCode.__args__}

_decoder = msgspec.json.Decoder(AnyOpCode)
_encoder = msgspec.json.Encoder()


def _field_of(err: msgspec.ValidationError) -> tuple[str, str]:
    text = str(err)
    m = re.search(r" - at `\$\.?(.*)`$", text)
    if m:
        return (m.group(1) or "opcode"), text[: m.start()]
    return "opcode", text


_FRIENDLY = {
    HOSTNAME_RE: "not a valid name (letters, digits, '-' and '.', max 63 per label)",
    MAC_RE: "not a valid MAC address (expected aa:bb:cc:dd:ee:ff, auto or generate)",
    TAG_RE: "not a valid tag (1-128 of letters, digits and .+*/:@-_)",
    IP_RE: "not a valid IP address (or pool/none)",
    NETWORK_NAME_RE: "not a valid network name (1-64 of letters, digits, '_', '-' and '.', "
    "starting with a letter or digit)",
    JOIN_RE: "not valid join information (expected sha256:<hex>:<token> from "
    "'corral-noded --join-info' on the new node)",
}


def _translate(err: msgspec.ValidationError) -> ParameterError:
    field, msg = _field_of(err)
    if field == "OP_ID":
        msg = msg.replace("Invalid value", "unknown opcode")
    elif msg.startswith(("Object contains unknown field", "Object missing required field")):
        m = re.search(r"`(.*)`", msg)
        name = m.group(1) if m else "?"
        where = "" if field == "opcode" else f"{field}."
        what = "unknown field" if msg.startswith("Object contains") else "missing required field"
        return ParameterError(f"{where}{name}", what)
    for pattern, friendly in _FRIENDLY.items():
        if pattern in msg.replace("\\\\", "\\"):
            msg = friendly
    return ParameterError(field, msg)


def decode(data: bytes | str) -> OpCode:
    """Decode and validate one opcode from JSON."""
    try:
        op: OpCode = _decoder.decode(data)
        return op
    except msgspec.ValidationError as err:
        raise _translate(err) from None
    except msgspec.DecodeError as err:
        raise ProtocolError(f"malformed opcode JSON: {err}") from None
    except RecursionError:
        raise ProtocolError("malformed opcode JSON: nested too deeply") from None


def from_obj(data: Any) -> OpCode:
    """Validate one opcode given as already-parsed JSON (a dict with ``OP_ID``)."""
    if not isinstance(data, dict):
        raise ParameterError("opcode", f"expected an object, got {type(data).__name__}")
    if "OP_ID" not in data:
        raise ParameterError("OP_ID", "missing opcode id")
    try:
        op: OpCode = msgspec.convert(data, AnyOpCode)
        return op
    except msgspec.ValidationError as err:
        raise _translate(err) from None


def to_obj(op: OpCode) -> dict[str, Any]:
    obj: dict[str, Any] = msgspec.to_builtins(op)
    return obj


def encode(op: OpCode) -> bytes:
    return _encoder.encode(op)
