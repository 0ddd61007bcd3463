"""The environment of OS scripts, built from typed inputs. Pure.

Layer: driver support (pure; imports ``osapi.parse``, ``rpc.types``). The
variables are Ganeti's (``backend.py OSCoreEnv``/``OSEnvironment``,
``ganeti-os-interface(7)``); values are rendered as Ganeti renders them
(``str()``: booleans ``True``/``False``). Scripts get only this
environment, nothing inherited from the node daemon.

Where Corral differs: ``INSTANCE_PRIMARY_NODE`` is the node's name (Ganeti
3.0 passes its UUID, an accident of the UUID migration); ``PATH`` includes
``/usr/local``, as for hook scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from corral.osapi.parse import API_V15, api_version, split_name
from corral.rpc.types import InstanceSpec, OsDefinition

SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Disk templates whose disks are block devices vs. image files on the node.
BLOCK_TEMPLATES = frozenset({"plain", "drbd", "blockdev", "rbd", "ext"})
FILE_TEMPLATES = frozenset({"file", "sharedfile", "gluster"})
# Corral's file driver: images are attached as they are (Ganeti's "loop").
FILE_DRIVER = "loop"


def render(value: Any) -> str:
    """A parameter value as Ganeti puts it into a script's environment."""
    return str(value)


def os_variant(os_name: str, defn: OsDefinition) -> str:
    """``OS_VARIANT``: the given variant, else the default one; empty below API 15.

    No check here: a variant forced past ``variants.list`` is passed as given.
    """
    if api_version(defn) < API_V15 or not defn.variants:
        return ""
    return split_name(os_name)[1] or defn.variants[0]


def os_core_env(
    os_name: str, defn: OsDefinition, osparams: Mapping[str, str], debug: int = 0
) -> dict[str, str]:
    """What every script gets (``verify`` gets only this): API, OS, variant, parameters."""
    env = {
        "OS_API_VERSION": str(api_version(defn)),
        "OS_NAME": defn.name,
        "OS_VARIANT": os_variant(os_name, defn),
        "DEBUG_LEVEL": str(debug),
    }
    for name, value in osparams.items():
        env[f"OSP_{name.upper()}"] = render(value)
    env["PATH"] = SCRIPT_PATH
    return env


def os_env(
    inst: InstanceSpec,
    defn: OsDefinition,
    osparams: Mapping[str, str],
    *,
    primary_node: str,
    debug: int = 0,
) -> dict[str, str]:
    """The environment of ``create``/``import``/``export``/``rename`` for ``inst``.

    ``inst`` must carry disk paths as the node sees them; ``inst.os`` is the
    OS name (with variant) the script runs as.
    """
    env = os_core_env(inst.os, defn, osparams, debug)
    env.update(
        {
            "INSTANCE_NAME": inst.name,
            "INSTANCE_OS": inst.os,
            "INSTANCE_UUID": inst.uuid,
            "INSTANCE_CTIME": render(inst.ctime),
            "INSTANCE_MTIME": render(inst.mtime),
            "INSTANCE_PRIMARY_NODE": primary_node,
            "HYPERVISOR": inst.hypervisor,
            "DISK_COUNT": str(len(inst.disks)),
            "NIC_COUNT": str(len(inst.nics)),
            "INSTANCE_SECONDARY_NODES": "",
        }
    )
    hv = inst.hvparams
    for i, d in enumerate(inst.disks):
        p = f"DISK_{i}_"
        if d.path:
            env[p + "PATH"] = d.path
        env[p + "ACCESS"] = d.mode
        env[p + "UUID"] = d.uuid
        env[p + "SIZE"] = str(d.size)
        if d.name:
            env[p + "NAME"] = d.name
        if "disk_type" in hv:
            env[p + "FRONTEND_TYPE"] = render(hv["disk_type"])
        if d.dev_type in BLOCK_TEMPLATES:
            env[p + "BACKEND_TYPE"] = "block"
        elif d.dev_type in FILE_TEMPLATES:
            env[p + "BACKEND_TYPE"] = f"file:{FILE_DRIVER}"
    for i, n in enumerate(inst.nics):
        p = f"NIC_{i}_"
        env[p + "MAC"] = n.mac
        env[p + "UUID"] = n.uuid
        if n.name:
            env[p + "NAME"] = n.name
        if n.ip:
            env[p + "IP"] = n.ip
        env[p + "MODE"] = n.nicparams.mode
        if n.nicparams.mode == "bridged":
            env[p + "BRIDGE"] = n.nicparams.link
        if n.nicparams.link:
            env[p + "LINK"] = n.nicparams.link
        for key, value in n.network.items():
            env[p + key] = value
        if "nic_type" in hv:
            env[p + "FRONTEND_TYPE"] = render(hv["nic_type"])
    for key, value in msgspec.structs.asdict(inst.beparams).items():
        env[f"INSTANCE_BE_{key}"] = render(value)
    for key, value in hv.items():
        env[f"INSTANCE_HV_{key}"] = render(value)
    return env
