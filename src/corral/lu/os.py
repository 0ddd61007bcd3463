"""OS definitions on the master: checking an instance's OS, running its scripts, the OS LUs.

Layer: logical units. Definitions live on the nodes, so every check asks
the instance's primary node (``os_validate``: the OS exists and is valid
there, the variant is declared, the parameters are known and API 20's
``verify`` accepts them). Scripts run on the primary node through
``instance_os_add`` / ``instance_run_rename``. Used by instance creation
and rename; ``gnt-instance reinstall`` and ``gnt-os`` have their LUs here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from corral.errors import CorralError, ECode, OpExecError, OpPrereqError, ParameterError
from corral.lu.base import LogicalUnit, NoHooksLU, register
from corral.lu.common import check_node_online, instance_spec
from corral.lu.instance import _InstanceLU
from corral.objects import Instance, Node
from corral.opcodes import OpInstanceCreate, OpInstanceReinstall, OpOsDiagnose
from corral.query import os as os_query
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import RpcResult

VALUE_DEFAULT = "default"  # an osparams value that removes the parameter (Ganeti's)


# --- parameters --------------------------------------------------------------------------


def normalize_osparams(raw: Mapping[str, Any], field: str = "osparams") -> dict[str, str]:
    """OS parameters as the scripts get them: names to values, all text."""
    out: dict[str, str] = {}
    for name, val in raw.items():
        if not name or "=" in name or not name.isprintable() or " " in name:
            raise ParameterError(field, f"invalid OS parameter name {name!r}")
        if isinstance(val, bool | int | float | str):
            out[name] = str(val)
        else:
            raise ParameterError(
                f"{field}/{name}", f"expected text or a number, got {type(val).__name__}"
            )
    return out


def merge_osparams(current: Mapping[str, Any], changes: Mapping[str, str]) -> dict[str, str]:
    """``changes`` applied to ``current``; the value ``default`` removes a parameter."""
    out = {k: str(v) for k, v in current.items()}
    for k, v in changes.items():
        if v == VALUE_DEFAULT:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def check_os_name(name: str, field: str = "os_type") -> None:
    os_name, _, variant = name.partition("+")
    if not os_name or "/" in name or any(c.isspace() for c in name) or os_name in (".", ".."):
        raise ParameterError(field, f"invalid OS name {name!r} (expected os or os+variant)")
    if "+" in name and not variant:
        raise ParameterError(field, f"invalid OS name {name!r}: empty variant")


def check_create_args(op: OpInstanceCreate) -> dict[str, str]:
    """Syntax of the OS part of a creation request; the normalized parameters."""
    osparams = normalize_osparams(op.osparams)
    if op.os_type:
        check_os_name(op.os_type)
    elif osparams:
        raise ParameterError("osparams", "OS parameters given without an OS (-o)")
    return osparams


# --- asking the node ---------------------------------------------------------------------


def _prereq_error(res: RpcResult[Any], what: str) -> CorralError:
    """A failed node check as a prerequisite error (the node's own error if it is one)."""
    if isinstance(res.error, OpPrereqError):
        return res.error
    return OpPrereqError(
        f"{what} failed on node {res.node}: {res.fail_msg or 'node offline'}", ECode.ENVIRON
    )


async def check_instance_os(
    lu: LogicalUnit[Any],
    node: Node,
    os_name: str,
    osparams: dict[str, str],
    force_variant: bool = False,
) -> t.OsDefinition:
    """OS, variant and parameters are fine on ``node`` (runs ``verify``); raise OpPrereqError."""
    res = await lu.rpc.call(
        lu.target(node),
        defs.OS_VALIDATE,
        t.OsValidateArgs(os_name=os_name, osparams=osparams, force_variant=force_variant),
    )
    if res.failed:
        raise _prereq_error(res, f"checking OS '{os_name}'")
    assert res.payload is not None and res.payload.definition is not None
    return res.payload.definition


async def run_create(
    lu: LogicalUnit[Any],
    node: Node,
    spec: t.InstanceSpec,
    osparams: dict[str, str],
    reinstall: bool,
) -> str:
    """Run the OS ``create`` script of ``spec.os`` on ``node``; the log's path."""
    lu.log_info(f"Running the OS create script of {spec.os} on {node.name}")
    res = await lu.rpc.call(
        lu.target(node),
        defs.INSTANCE_OS_ADD,
        t.InstanceOsAddArgs(
            instance=spec, osparams=osparams, reinstall=reinstall, debug=lu.op.debug_level
        ),
    )
    if res.failed:
        code = res.error.code if res.error else ECode.ENVIRON
        raise OpExecError(
            f"Could not install OS '{spec.os}' for instance {spec.name} on node "
            f"{node.name}: {res.fail_msg or 'node offline'}",
            code,
        )
    assert res.payload is not None
    return res.payload.log


async def install_new_instance(
    lu: LogicalUnit[Any], inst: Instance, created: list[t.DiskSpec]
) -> None:
    """``create`` for an instance just added; on failure remove it and its disks again.

    An instance whose OS did not install would claim a system it does not
    have; removing it lets the admin fix the cause and run the same command.
    """
    pnode = lu.cfg.data.nodes[inst.primary_node]
    osparams = {k: str(v) for k, v in inst.osparams.items()}
    try:
        await run_create(lu, pnode, instance_spec(lu.cfg, inst), osparams, reinstall=False)
    except OpExecError as err:
        node = lu.target(pnode)
        for spec in created:
            r = await lu.rpc.call(node, defs.BLOCKDEV_REMOVE, t.DiskRemoveArgs(disk=spec))
            if r.failed:
                lu.log_warning(f"could not remove disk {spec.index}: {r.fail_msg}")
        lu.cfg.remove_instance(inst.uuid)
        await lu.cfg.commit()
        raise OpExecError(
            f"{err.message}\nThe instance {inst.name} and its disks were removed again.", err.code
        ) from err


async def run_rename(lu: LogicalUnit[Any], inst: Instance, old_name: str) -> None:
    """Run the OS ``rename`` script after a rename; a failure is a warning (Ganeti's)."""
    if not inst.os:
        return
    node = lu.cfg.data.nodes[inst.primary_node]
    if node.offline:
        lu.log_warning(f"node {node.name} is offline; the OS rename script did not run")
        return
    res = await lu.rpc.call(
        lu.target(node),
        defs.INSTANCE_RUN_RENAME,
        t.InstanceRunRenameArgs(
            instance=instance_spec(lu.cfg, inst),
            old_name=old_name,
            osparams={k: str(v) for k, v in inst.osparams.items()},
            debug=lu.op.debug_level,
        ),
    )
    if res.failed:
        lu.log_warning(
            f"Could not run OS rename script for instance {inst.name} on node {node.name} "
            f"(but the instance has been renamed): {res.fail_msg or 'node offline'}"
        )


# --- the LUs -------------------------------------------------------------------------------


@register(OpOsDiagnose)
class LUOsDiagnose(NoHooksLU[OpOsDiagnose]):
    """Ganeti's OS query: asks every online vm-capable node, merges per OS."""

    async def exec(self) -> list[Any]:
        nodes = [n for n in self.cfg.data.nodes.values() if n.vm_capable and not n.offline]
        results = await self.rpc.call_multi(
            [self.target(n) for n in nodes], defs.OS_DIAGNOSE, t.Empty()
        )
        for r in results.values():
            if r.failed:
                self.log_warning(f"node {r.node} did not answer: {r.fail_msg}; left out")
        return os_query.rows(os_query.merge(results), self.op.output_fields, self.op.names)


@register(OpInstanceReinstall)
class LUInstanceReinstall(_InstanceLU):
    """Run the OS ``create`` script again on a stopped instance (optionally a new OS).

    The instance's OS and parameters change in the config only once the
    script succeeded, so a failed reinstall leaves the config as it was.
    """

    HPATH = "instance-reinstall"
    op: OpInstanceReinstall

    def check_prereq(self) -> None:
        super().check_prereq()
        op, inst = self.op, self.inst
        check_node_online(self.pnode, ", cannot reinstall")
        if not inst.disks:
            raise OpPrereqError(f"Instance '{inst.name}' has no disks", ECode.INVAL)
        if inst.admin_state != "down":
            raise OpPrereqError(
                f"Instance '{inst.name}' is marked to be {inst.admin_state}, cannot reinstall",
                ECode.STATE,
            )
        if op.os_type is not None:
            check_os_name(op.os_type)
        self.os_name = op.os_type if op.os_type is not None else inst.os
        if not self.os_name:
            raise OpPrereqError(f"Instance '{inst.name}' has no OS; give one with -o", ECode.INVAL)
        changes = normalize_osparams(op.osparams or {})
        self.osparams = merge_osparams(inst.osparams, changes)

    async def check_prereq_nodes(self) -> None:
        if await self.is_running():
            raise OpPrereqError(
                f"Instance '{self.inst.name}' is running, cannot reinstall", ECode.STATE
            )
        await check_instance_os(
            self, self.pnode, self.os_name, self.osparams, self.op.force_variant
        )

    async def exec(self) -> None:
        inst = self.inst
        spec = msgspec.structs.replace(instance_spec(self.cfg, inst), os=self.os_name)
        if self.os_name != inst.os:
            self.log_info(f"Changing OS scripts to '{self.os_name}'...")
        await run_create(self, self.pnode, spec, self.osparams, reinstall=True)
        new = self.cfg.copy(inst)
        new.os = self.os_name
        new.osparams = dict(self.osparams)
        self.inst = self.cfg.update(new)


__all__ = [
    "LUInstanceReinstall",
    "LUOsDiagnose",
    "check_create_args",
    "check_instance_os",
    "install_new_instance",
    "merge_osparams",
    "normalize_osparams",
    "run_create",
    "run_rename",
]
