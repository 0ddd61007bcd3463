"""Node backend: OS definitions — diagnose, validate, and the OS scripts of instances.

Layer: node backend (imports ``osapi``). Each call finds the OS in this
node's search path itself: definitions are installed per node, and the
master only learns of them through these calls. Files for export and
import must lie under the export directory, so the RPC cannot be used to
read or overwrite anything else on the node.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from corral import osapi
from corral.backend.dispatch import handler
from corral.backend.node import NodeBackend
from corral.errors import ECode, OpPrereqError, ParameterError
from corral.osapi import parse, runner
from corral.rpc import defs
from corral.rpc import types as t

EXPORT_DIR = "/srv/corral/export"
"""Where export images live (cluster-wide path, under each node's root prefix)."""

# A script must end before its RPC times out, so the node reports why it failed.
_MARGIN = 60.0


def _opts(b: NodeBackend, call: defs.RpcCall[Any, Any], debug: int) -> runner.RunOptions:
    return runner.RunOptions(
        node=b.node_name,
        log_dir=b.paths.log_dir,
        debug=debug,
        timeout=call.timeout.value - _MARGIN,
    )


def get_os(b: NodeBackend, os_name: str) -> t.OsDefinition:
    """The valid definition of ``os_name`` (variant ignored) on this node, or raise."""
    name = parse.split_name(os_name)[0]
    defn = osapi.find(name, osapi.search_path(b.paths))
    if defn is None:
        raise OpPrereqError(
            f"OS '{name}' not found on node {b.node_name} (search path: "
            f"{', '.join(map(str, osapi.search_path(b.paths)))})",
            ECode.INVAL,
        )
    if not defn.valid:
        raise OpPrereqError(
            f"OS '{name}' is invalid on node {b.node_name}: {defn.diagnose}", ECode.INVAL
        )
    return defn


def _image_path(b: NodeBackend, path: str, field: str) -> Path:
    norm = os.path.normpath(path)
    if not os.path.isabs(path) or norm != path or not norm.startswith(EXPORT_DIR + "/"):
        raise ParameterError(
            field, f"{path!r} is not a normalized absolute path under {EXPORT_DIR}"
        )
    return b.paths.host_path(norm)


@handler(defs.OS_DIAGNOSE)
async def os_diagnose(b: NodeBackend, args: t.Empty) -> t.OsDiagnoseResult:
    oses = await asyncio.to_thread(osapi.diagnose, osapi.search_path(b.paths))
    return t.OsDiagnoseResult(oses=oses)


@handler(defs.OS_VALIDATE)
async def os_validate(b: NodeBackend, args: t.OsValidateArgs) -> t.OsValidateResult:
    name = parse.split_name(args.os_name)[0]
    found = osapi.find(name, osapi.search_path(b.paths))
    if found is None and not args.required:
        return t.OsValidateResult(definition=None)
    defn = get_os(b, args.os_name)
    osapi.resolve_variant(defn, args.os_name, args.force_variant)
    if parse.VERIFY_PARAMETERS in args.checks:
        osapi.check_parameters(defn, args.osparams)
    if osapi.api_version(defn) >= parse.API_V20:
        await runner.verify(
            defn,
            args.os_name,
            args.osparams,
            list(args.checks),
            timeout=defs.OS_VALIDATE.timeout.value - 30.0,
        )
    return t.OsValidateResult(definition=defn)


@handler(defs.INSTANCE_OS_ADD)
async def instance_os_add(b: NodeBackend, args: t.InstanceOsAddArgs) -> t.OsScriptResult:
    inst = b.local_instance(args.instance)
    defn = get_os(b, inst.os)
    log = await runner.create(
        defn, inst, args.osparams, _opts(b, defs.INSTANCE_OS_ADD, args.debug), args.reinstall
    )
    return t.OsScriptResult(log=str(log))


@handler(defs.INSTANCE_RUN_RENAME)
async def instance_run_rename(b: NodeBackend, args: t.InstanceRunRenameArgs) -> t.OsScriptResult:
    inst = b.local_instance(args.instance)
    defn = get_os(b, inst.os)
    log = await runner.rename(
        defn, inst, args.old_name, args.osparams, _opts(b, defs.INSTANCE_RUN_RENAME, args.debug)
    )
    return t.OsScriptResult(log=str(log))


@handler(defs.INSTANCE_OS_EXPORT)
async def instance_os_export(b: NodeBackend, args: t.InstanceOsExportArgs) -> t.OsScriptResult:
    dest = _image_path(b, args.dest, "dest")
    inst = b.local_instance(args.instance)
    defn = get_os(b, inst.os)
    res = await runner.export_disk(
        defn,
        inst,
        args.disk_index,
        dest,
        args.osparams,
        _opts(b, defs.INSTANCE_OS_EXPORT, args.debug),
    )
    return t.OsScriptResult(log=str(res.log), size_hint=res.size_hint, size=res.size)


@handler(defs.INSTANCE_OS_IMPORT)
async def instance_os_import(b: NodeBackend, args: t.InstanceOsImportArgs) -> t.OsScriptResult:
    source = _image_path(b, args.source, "source")
    inst = b.local_instance(args.instance)
    defn = get_os(b, inst.os)
    log = await runner.import_disk(
        defn,
        inst,
        args.disk_index,
        source,
        args.osparams,
        _opts(b, defs.INSTANCE_OS_IMPORT, args.debug),
    )
    return t.OsScriptResult(log=str(log))
