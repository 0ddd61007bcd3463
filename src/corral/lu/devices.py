"""Planning NIC and disk changes of an instance (``gnt-instance modify --net/--disk``).

Layer: logical units, pure (config reads only, no RPC). The requested
``(action, identifier, params)`` list is applied in order to a working copy
of the instance's NICs/disks — identifiers refer to the list as earlier
changes left it, as in Ganeti — and becomes a list of typed
:class:`NicChange`/:class:`DiskChange` the LU then executes one by one.
Everything that can be refused is refused here, before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from corral import objects, params
from corral.config.writer import ConfigWriter
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.lu import network_checks
from corral.objects import NIC, Disk, NodeGroup
from corral.opcodes import MAC_RE, DeviceIdent, DeviceMod

MAX_NICS = 8
MAX_DISKS = 16
NIC_KEYS = ("mac", "ip", "mode", "link", "vlan", "network", "name")
DISK_ADD_KEYS = ("size", "mode", "name", "spindles")
DISK_MODIFY_KEYS = ("mode", "name")

Action = Literal["add", "remove", "modify"]


@dataclass
class NicChange:
    action: Action
    index: int  # position in the NIC list when this change is applied
    nic: NIC  # add/modify: the NIC as it will be; remove: as it is
    old: NIC | None = None  # modify: as it was
    mac_changed: bool = False

    @property
    def relinks(self) -> bool:
        """A modify that changes how the NIC is wired (mode/link/VLAN/IP)."""
        return self.old is not None and (
            self.old.nicparams != self.nic.nicparams or self.old.ip != self.nic.ip
        )


@dataclass
class DiskChange:
    action: Action
    index: int
    disk: Disk
    old: Disk | None = None


def resolve(kind: str, items: list[Any], ident: DeviceIdent, action: Action) -> int:
    """Index of ``ident`` (index, -1, name or UUID) in ``items``; for add, where to insert."""
    if isinstance(ident, str) and ident.lstrip("-").isdigit():
        ident = int(ident)
    if isinstance(ident, int):
        limit = len(items) if action == "add" else len(items) - 1
        if ident == -1:
            return len(items) if action == "add" else _last(kind, items)
        if 0 <= ident <= limit:
            return ident
        n = len(items)
        have = f"{n} {kind}{'' if n == 1 else 's'}" if n else f"no {kind}s"
        raise OpPrereqError(
            f"{kind} index {ident} out of range (the instance has {have})", ECode.INVAL
        )
    if action == "add":
        raise ParameterError(f"{kind}s", f"add takes an index (or -1), not {ident!r}")
    for i, item in enumerate(items):
        if ident in (item.name, item.uuid):
            return i
    raise OpPrereqError(
        f"{kind} '{ident}' not found (no {kind} has that name or UUID)", ECode.NOENT
    )


def _last(kind: str, items: list[Any]) -> int:
    if not items:
        raise OpPrereqError(f"the instance has no {kind}s", ECode.INVAL)
    return len(items) - 1


def _check_keys(field: str, p: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(p) - set(allowed))
    if unknown:
        raise ParameterError(
            field, f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(allowed)}"
        )


def check_mac(cfg: ConfigWriter, field: str, value: Any, taken: set[str]) -> str:
    """A requested MAC, lower-cased: auto/generate, or unique and unicast (then taken)."""
    import re

    mac = str(value).lower()
    if not re.match(MAC_RE, mac):
        raise ParameterError(f"{field}.mac", f"not a valid MAC address: {value!r}")
    if mac in ("auto", "generate"):
        return mac
    if mac in taken or cfg.mac_in_use(mac):
        raise OpPrereqError(
            f"{field}: MAC address {mac} already in use in the cluster", ECode.NOTUNIQUE
        )
    if int(mac.split(":")[0], 16) & 1:
        raise ParameterError(f"{field}.mac", f"{mac} is a multicast address")
    taken.add(mac)
    return mac


def _ip(field: str, value: Any) -> str | None:
    import ipaddress

    if value in (None, "", "none", "None"):
        return None
    if value == "pool":
        raise ParameterError(f"{field}.ip", "IP pools need a network with a pool")
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ParameterError(f"{field}.ip", f"not a valid IP address: {value!r}") from None


def build_nic(
    cfg: ConfigWriter,
    group: NodeGroup,
    p: dict[str, Any],
    field: str,
    taken_macs: set[str],
    base: NIC | None = None,
) -> NIC:
    """A NIC from creation/modify parameters (``base``: the NIC being modified)."""
    _check_keys(field, p, NIC_KEYS)
    nic = NIC(mac="auto") if base is None else objects.NIC(**_nic_fields(base))
    old_network = nic.network
    if "network" in p:
        if p["network"] in (None, "", "none"):
            nic.network = None
        else:
            found = cfg.network_by_name(str(p["network"]))
            if found is None:
                raise OpPrereqError(f"{field}: network '{p['network']}' not known", ECode.NOENT)
            nic.network = found.uuid
    net = cfg.data.networks.get(nic.network) if nic.network else None
    asked: dict[str, Any] = {k: p.get(k) for k in ("mode", "link", "vlan") if k in p}
    if net is not None and (nic.network != old_network or asked):
        # On a network, mode/link/vlan come from its connection to the node's group.
        nic.nicparams = network_checks.nic_network_params(group, net, asked, field)
    else:
        overrides = dict(nic.nicparams)
        for key, value in asked.items():
            if value in (None, "default"):
                overrides.pop(key, None)
            else:
                overrides[key] = value
        nic.nicparams = params.NIC.check_overrides(overrides, field)
    filled = params.NIC.fill(
        objects.cluster_default(cfg.cluster.nicparams), group.nicparams, nic.nicparams
    )
    network_checks.check_ovn_mode(filled.mode, net, f"{field}/mode")
    if "ip" in p:
        nic.ip = _ip(field, p["ip"])
    if "ip" in p or nic.network != old_network:
        network_checks.check_nic_ip(net, nic.ip, field)
    if filled.mode == "routed" and not nic.ip:
        raise ParameterError(f"{field}.ip", "routed NICs need an IP address")
    if "mac" in p:
        if base is not None and str(p["mac"]).lower() == base.mac:
            nic.mac = base.mac  # its own MAC: no change, not "in use"
        else:
            nic.mac = check_mac(cfg, field, p["mac"], taken_macs)
    if "name" in p:
        nic.name = None if p["name"] in (None, "", "none") else str(p["name"])
    return nic


def _nic_fields(nic: NIC) -> dict[str, Any]:
    return {
        "uuid": nic.uuid,
        "name": nic.name,
        "mac": nic.mac,
        "ip": nic.ip,
        "network": nic.network,
        "nicparams": dict(nic.nicparams),
        "serial_no": nic.serial_no,
        "ctime": nic.ctime,
        "tags": list(nic.tags),
    }


def _check_names(kind: str, items: list[Any]) -> None:
    names = [i.name for i in items if i.name]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OpPrereqError(f"duplicate {kind} name(s): {', '.join(dup)}", ECode.NOTUNIQUE)


def plan_nics(
    cfg: ConfigWriter, group: NodeGroup, nics: list[NIC], mods: list[DeviceMod]
) -> list[NicChange]:
    work = list(nics)
    taken: set[str] = set()
    out: list[NicChange] = []
    for n, (action, ident, p) in enumerate(mods):
        field = f"nics[{n}]"
        idx = resolve("nic", work, ident, action)
        if action == "add":
            if len(work) >= MAX_NICS:
                raise OpPrereqError(f"an instance has at most {MAX_NICS} NICs", ECode.NORES)
            nic = build_nic(cfg, group, p, field, taken)
            work.insert(idx, nic)
            out.append(NicChange("add", idx, nic))
        elif action == "remove":
            if p:
                raise ParameterError(field, "remove takes no parameters")
            out.append(NicChange("remove", idx, work.pop(idx)))
        else:
            old = work[idx]
            nic = build_nic(cfg, group, p, field, taken, base=old)
            # Only an asked-for auto/generate is a new MAC; a NIC added earlier in
            # this job still says "auto" and keeps the MAC it gets when added.
            if "mac" in p and nic.mac in ("auto", "generate"):
                nic.mac = "generate"
            work[idx] = nic
            out.append(NicChange("modify", idx, nic, old, mac_changed=nic.mac != old.mac))
    _check_names("NIC", work)
    return out


def plan_disks(template: str, disks: list[Disk], mods: list[DeviceMod]) -> list[DiskChange]:
    if mods and template == "diskless":
        raise OpPrereqError("disk operations are not possible on a diskless instance", ECode.INVAL)
    work = list(disks)
    out: list[DiskChange] = []
    for n, (action, ident, p) in enumerate(mods):
        field = f"disks[{n}]"
        idx = resolve("disk", work, ident, action)
        if action == "add":
            _check_keys(field, p, DISK_ADD_KEYS)
            if len(work) >= MAX_DISKS:
                raise OpPrereqError(f"an instance has at most {MAX_DISKS} disks", ECode.NORES)
            disk = Disk(
                dev_type=template, size=_size(field, p), mode=_mode(field, p.get("mode", "rw"))
            )
            disk.name = str(p["name"]) if p.get("name") else None
            if "spindles" in p:
                disk.spindles = int(p["spindles"])
            work.insert(idx, disk)
            out.append(DiskChange("add", idx, disk))
        elif action == "remove":
            if p:
                raise ParameterError(field, "remove takes no parameters")
            if len(work) == 1:
                raise OpPrereqError("cannot remove the last disk of an instance", ECode.INVAL)
            out.append(DiskChange("remove", idx, work.pop(idx)))
        else:
            _check_keys(field, p, DISK_MODIFY_KEYS)
            old = work[idx]
            disk = Disk(**{f: getattr(old, f) for f in old.__struct_fields__})
            if "mode" in p:
                disk.mode = _mode(field, p["mode"])
            if "name" in p:
                disk.name = None if p["name"] in (None, "", "none") else str(p["name"])
            work[idx] = disk
            out.append(DiskChange("modify", idx, disk, old))
    _check_names("disk", work)
    return out


def _size(field: str, p: dict[str, Any]) -> int:
    if "size" not in p:
        raise ParameterError(f"{field}.size", "a new disk needs a size (MiB)")
    try:
        size = int(p["size"])
    except (TypeError, ValueError):
        raise ParameterError(f"{field}.size", f"not a size in MiB: {p['size']!r}") from None
    if not 1 <= size <= 1024**3:
        raise ParameterError(f"{field}.size", f"size {size} MiB out of range")
    return size


def _mode(field: str, value: Any) -> Literal["rw", "ro"]:
    if value == "rw":
        return "rw"
    if value == "ro":
        return "ro"
    raise ParameterError(f"{field}.mode", f"access mode must be rw or ro, not {value!r}")


def nic_text(nic: NIC, filled: params.NicParams) -> str:
    """Ganeti's change string of a NIC: ``mac=…,ip=…,mode=…,link=…,vlan=…``."""
    return f"mac={nic.mac},ip={nic.ip},mode={filled.mode},link={filled.link},vlan={filled.vlan}" + (
        f",name={nic.name}" if nic.name else ""
    )
