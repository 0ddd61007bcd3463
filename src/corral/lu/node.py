"""Node logical units: add (enrolment), remove (revocation), modify (roles).

Layer: logical units. Enrolment is the one place the master talks to a node
outside the RPC table: the new node is not yet in the cluster's PKI, so the
master reaches its bootstrap endpoint over TLS pinned to the fingerprint
the admin copied from the node (``corral-noded --join-info``), hands it a
certificate signed by the cluster CA, and from then on uses mutual-TLS RPC.
"""

from __future__ import annotations

from typing import Any

from corral import pki
from corral.errors import ConfigError, ECode, OpExecError, OpPrereqError, ParameterError
from corral.locking import Level
from corral.lu.base import ALL_SET, LogicalUnit, register
from corral.objects import Node
from corral.opcodes import OpNodeAdd, OpNodeRemove, OpNodeSetParams
from corral.rpc import defs
from corral.rpc import types as t
from corral.rpc.client import NodeTarget


def _read(path: Any, what: str) -> str:
    try:
        return str(path.read_text())
    except OSError as err:
        raise ConfigError(
            f"cannot read the cluster {what} ({path}): {err.strerror}; "
            "only the master (or a master candidate) can do this"
        ) from None


def candidate_count(nodes: list[Node]) -> int:
    return sum(1 for n in nodes if n.master_candidate and not n.offline)


@register(OpNodeAdd)
class LUNodeAdd(LogicalUnit[OpNodeAdd]):
    HPATH = "node-add"
    HTYPE = "NODE"
    REQ_BGL = True

    def check_prereq(self) -> None:
        op, cfg = self.op, self.cfg
        existing = cfg.node_by_name(op.node_name)
        if existing is not None and not op.readd:
            raise OpPrereqError(
                f"node '{op.node_name}' is already in the cluster (use --readd to re-enrol it)",
                ECode.EXISTS,
            )
        if existing is None and op.readd:
            raise OpPrereqError(
                f"node '{op.node_name}' is not in the cluster; cannot readd", ECode.NOENT
            )
        if existing is not None and existing.uuid == cfg.cluster.master_node:
            raise OpPrereqError("cannot readd the master node", ECode.STATE)
        for n in cfg.data.nodes.values():
            if n.name != op.node_name and op.primary_ip in (n.primary_ip, n.secondary_ip):
                raise OpPrereqError(
                    f"IP address {op.primary_ip} is already used by node {n.name}", ECode.NOTUNIQUE
                )
        if op.join is None:
            raise ParameterError(
                "join",
                "enrolling a node needs its join information "
                "(run 'corral-noded --join-info' on the new node)",
            )
        self.group = (
            cfg.expand_group(op.group) if op.group else next(iter(cfg.data.nodegroups.values()))
        )
        self.existing = existing
        others = [n for n in cfg.data.nodes.values() if n.name != op.node_name]
        self.candidate = (
            op.master_capable and candidate_count(others) < cfg.cluster.candidate_pool_size
        )

    def build_hooks_env(self) -> dict[str, str]:
        return {
            "OP_TARGET": self.op.node_name,
            "NODE_NAME": self.op.node_name,
            "NODE_PIP": self.op.primary_ip,
            "NODE_SIP": self.op.secondary_ip or self.op.primary_ip,
        }

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        m = self.cfg.cluster.master_node
        return [m], [m]

    async def exec(self) -> str:
        from corral.rpc import https

        op, cfg, paths = self.op, self.cfg, self.ctx.paths
        assert op.join is not None
        _, _, rest = op.join.partition(":")
        digest, _, token = rest.partition(":")
        fingerprint = f"sha256:{digest}"
        ca_cert = _read(paths.ca_cert, "CA certificate")
        ca_key = _read(paths.ca_key, "CA key")
        cert, key = pki.issue_node_cert(ca_cert, ca_key, op.node_name, [op.primary_ip])
        crl = pki.make_crl(ca_cert, ca_key, cfg.cluster.revoked_certs)
        payload: dict[str, Any] = {
            "token": token,
            "node_name": op.node_name,
            "cluster_name": cfg.cluster.cluster_name,
            "port": cfg.cluster.noded_port,
            "ca_pem": ca_cert,
            "cert_pem": cert,
            "key_pem": key,
            "crl_pem": crl,
        }
        if self.candidate:
            # Candidates can become master: they need the CA key to enrol nodes.
            payload["ca_key_pem"] = ca_key
        self.log_info(f"Enrolling node {op.node_name} at {op.primary_ip}")
        await https.enroll(op.primary_ip, cfg.cluster.noded_port, fingerprint, token, payload)
        target = NodeTarget(op.node_name, op.primary_ip)
        ver = (await self.rpc.call(target, defs.VERSION, t.Empty())).get(
            f"contacting the new node {op.node_name} over mutual TLS"
        )
        if ver.protocol != defs.PROTOCOL_VERSION:
            raise OpExecError(
                f"node {op.node_name} speaks RPC protocol {ver.protocol}, the "
                f"master {defs.PROTOCOL_VERSION}"
            )
        serial = pki.cert_serial(cert)
        if self.existing is not None:
            node = cfg.copy(self.existing)
            node.primary_ip = op.primary_ip
            node.secondary_ip = op.secondary_ip or op.primary_ip
            node.offline = node.drained = False
            node.master_candidate = self.candidate
            old = node.cert_serial
            node.cert_serial = serial
            cfg.update(node)
            if old and old not in cfg.cluster.revoked_certs:
                await self._revoke(old)
        else:
            cfg.add_node(
                Node(
                    name=op.node_name,
                    primary_ip=op.primary_ip,
                    secondary_ip=op.secondary_ip or op.primary_ip,
                    group=self.group.uuid,
                    master_candidate=self.candidate,
                    master_capable=op.master_capable,
                    vm_capable=op.vm_capable,
                    cert_serial=serial,
                )
            )
        await cfg.commit()
        role = "master candidate" if self.candidate else "regular node"
        self.log_info(f"Node {op.node_name} added as {role}")
        return op.node_name

    async def _revoke(self, serial: int) -> None:
        await revoke_and_distribute(self, serial)


async def revoke_and_distribute(lu: LogicalUnit[Any], serial: int) -> None:
    """Add a certificate serial to the CRL and push the CRL to every online node."""
    cfg, paths = lu.cfg, lu.ctx.paths
    cluster = cfg.copy(cfg.cluster)
    if serial and serial not in cluster.revoked_certs:
        cluster.revoked_certs = [*cluster.revoked_certs, serial]
        cfg.update(cluster)
    ca_cert = _read(paths.ca_cert, "CA certificate")
    crl = pki.make_crl(ca_cert, _read(paths.ca_key, "CA key"), cfg.cluster.revoked_certs)
    targets = [lu.target(n) for n in cfg.data.nodes.values() if not n.offline]
    res = await lu.rpc.call_multi(targets, defs.UPDATE_CRL, t.CrlArgs(crl_pem=crl))
    for node, r in res.items():
        if r.failed:
            lu.log_warning(
                f"could not install the new CRL on {node}: {r.fail_msg}",
                hint="run 'gnt-cluster verify' once the node is back",
            )


@register(OpNodeRemove)
class LUNodeRemove(LogicalUnit[OpNodeRemove]):
    HPATH = "node-remove"
    HTYPE = "NODE"
    REQ_BGL = True

    def check_prereq(self) -> None:
        node = self.cfg.expand_node(self.op.node_name)
        if node.uuid == self.cfg.cluster.master_node:
            raise OpPrereqError("cannot remove the master node; fail over first", ECode.STATE)
        insts = self.cfg.node_instances(node.uuid)
        if insts:
            names = ", ".join(sorted(i.name for i in insts))
            raise OpPrereqError(f"node {node.name} still has instances: {names}", ECode.STATE)
        self.node = node

    def build_hooks_env(self) -> dict[str, str]:
        return {"OP_TARGET": self.node.name, "NODE_NAME": self.node.name}

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        m = self.cfg.cluster.master_node
        return [m], [m]

    async def exec(self) -> None:
        node = self.node
        if not node.offline:
            r = await self.rpc.call(
                self.target(node),
                defs.NODE_LEAVE,
                t.NodeLeaveArgs(cluster_name=self.cfg.cluster.cluster_name),
            )
            if r.failed:
                self.log_warning(
                    f"node {node.name} could not be told to leave: "
                    f"{r.fail_msg}; its certificate is revoked anyway"
                )
        self.cfg.remove_node(node.uuid)
        await revoke_and_distribute(self, node.cert_serial)
        self.log_info(f"Node {node.name} removed; its certificate is revoked")


@register(OpNodeSetParams)
class LUNodeSetParams(LogicalUnit[OpNodeSetParams]):
    HPATH = "node-modify"
    HTYPE = "NODE"

    def expand_names(self) -> None:
        self.node_uuid = self.cfg.expand_node(self.op.node_name).uuid
        self.needed_locks[Level.NODE] = [self.node_uuid]
        # Instances are only read (to refuse offlining a node that runs some).
        self.needed_locks[Level.INSTANCE] = ALL_SET
        self.share_locks[Level.INSTANCE] = True

    def check_prereq(self) -> None:
        op = self.op
        node = self.cfg.data.nodes.get(self.node_uuid)
        if node is None:
            raise OpPrereqError(f"node '{op.node_name}' was removed", ECode.NOENT)
        flags = ("master_candidate", "offline", "drained", "master_capable", "vm_capable")
        if all(getattr(op, f) is None for f in flags):
            raise ParameterError("node", "nothing to change")
        is_master = node.uuid == self.cfg.cluster.master_node
        if is_master and (
            op.offline or op.drained or op.master_candidate is False or op.master_capable is False
        ):
            raise OpPrereqError(
                "the master node cannot be offlined, drained or demoted; fail over first",
                ECode.STATE,
            )
        if sum(1 for f in ("offline", "drained") if getattr(op, f)) > 1 or (
            op.master_candidate and (op.offline or op.drained)
        ):
            raise ParameterError("node", "offline, drained and master candidate exclude each other")
        new = self.cfg.copy(node)
        for f in flags:
            v = getattr(op, f)
            if v is not None:
                setattr(new, f, v)
        if op.offline or op.drained or op.master_capable is False:
            new.master_candidate = False
        if op.offline and self.cfg.node_instances(node.uuid) and not op.force:
            running = [i.name for i in self.cfg.node_instances(node.uuid) if i.admin_state == "up"]
            if running:
                raise OpPrereqError(
                    f"node {node.name} has running instances "
                    f"({', '.join(running)}); use --force to offline it",
                    ECode.STATE,
                )
        if new.master_candidate and not node.master_candidate:
            if not new.master_capable:
                raise OpPrereqError(f"node {node.name} is not master-capable", ECode.STATE)
            if new.offline or new.drained:
                raise OpPrereqError(f"node {node.name} is offline or drained", ECode.STATE)
        self.new = new
        self.node = node

    def build_hooks_env(self) -> dict[str, str]:
        op = self.op
        return {
            "OP_TARGET": op.node_name,
            "NODE_NAME": op.node_name,
            "MASTER_CANDIDATE": str(op.master_candidate),
            "OFFLINE": str(op.offline),
            "DRAINED": str(op.drained),
        }

    def build_hooks_nodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.cluster.master_node]
        if not self.node.offline:
            nodes.append(self.node.uuid)
        return nodes, nodes

    async def exec(self) -> list[list[str]]:
        changes = []
        for f in ("master_candidate", "offline", "drained", "master_capable", "vm_capable"):
            if getattr(self.new, f) != getattr(self.node, f):
                changes.append([f, str(getattr(self.new, f))])
        self.cfg.update(self.new)
        return changes
