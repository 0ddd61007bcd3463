"""Where an instance's console is: the serial console through the node daemon, or VNC.

Layer: logical units. Like Ganeti's ``OP_INSTANCE_CONSOLE`` the answer is a
description the client acts on; Corral's serial console is a WebSocket on
the node daemon's mutual-TLS port instead of an SSH command.
"""

from __future__ import annotations

from typing import Any

from corral import hypervisor
from corral.errors import ECode, OpPrereqError
from corral.locking import Level
from corral.lu.base import LogicalUnit, register
from corral.opcodes import OpInstanceConsole
from corral.rpc import defs
from corral.rpc import types as t


def vnc_console(node_ip: str, bind: str, port: int | None) -> str | None:
    """Ganeti's ``vnc to <host>:<port> (display <n>)`` text, or None without VNC."""
    if not bind:
        return None
    if bind.startswith("/"):
        return f"vnc on UNIX socket {bind}"
    if port is None:
        return None
    host = node_ip if bind in ("0.0.0.0", "::") else bind
    return f"vnc to {host}:{port} (display {port - 5900})"


@register(OpInstanceConsole)
class LUInstanceConsole(LogicalUnit[OpInstanceConsole]):
    def expand_names(self) -> None:
        self.inst = self.cfg.expand_instance(self.op.instance_name)
        self.needed_locks[Level.INSTANCE] = [self.inst.name]
        self.share_locks[Level.INSTANCE] = True

    async def exec(self) -> dict[str, Any]:
        inst = self.inst
        node = self.cfg.data.nodes[inst.primary_node]
        if inst.admin_state != "up":
            raise OpPrereqError(f"instance {inst.name} is not marked to be up", ECode.STATE)
        res = await self.rpc.call(
            self.target(node),
            defs.INSTANCE_INFO,
            t.InstanceNameArgs(name=inst.name, hypervisor=inst.hypervisor),
        )
        rt = res.get(f"asking {node.name} about {inst.name}").runtime
        if rt is None or rt.state == "shutdown":
            raise OpPrereqError(f"instance {inst.name} is not running", ECode.STATE)
        group = self.cfg.node_group(node)
        hv = hypervisor.fill_hv(self.cfg.cluster, group, inst)
        out: dict[str, Any] = {
            "instance": inst.name,
            "node": node.name,
            "host": node.primary_ip,
            "port": self.cfg.cluster.noded_port,
            "hypervisor": inst.hypervisor,
        }
        if hv.get("serial_console"):  # only hypervisors with that parameter have one
            out["kind"] = "serial"
            out["path"] = f"/console/{inst.name}"
            return out
        vnc = vnc_console(node.primary_ip, str(hv.get("vnc_bind_address", "")), inst.network_port)
        if vnc is not None:
            out["kind"] = "vnc"
            out["message"] = f"Instance {inst.name} has no serial console; {vnc}"
            return out
        out["kind"] = "message"
        out["message"] = f"Instance {inst.name} has no console ({inst.hypervisor} hypervisor)"
        return out
