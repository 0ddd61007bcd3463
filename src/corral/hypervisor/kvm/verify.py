"""Checks of KVM parameters: cross-field syntax (master) and the node (files, users).

Layer: driver checks. The master calls :func:`check_syntax` on filled
parameters; the node calls :func:`check_node` before every start, so a
missing kernel, binary or password file is a clear error and nothing is
created.
"""

from __future__ import annotations

import os
import pwd

from corral.errors import ECode, HypervisorError, ParameterError
from corral.hypervisor.kvm.params import KvmHvParams
from corral.network import setup
from corral.rpc.types import InstanceSpec


def check_syntax(hv: KvmHvParams, field: str = "hvparams") -> None:
    if hv.security_model == "user" and not hv.security_domain:
        raise ParameterError(
            f"{field}/security_domain", "security_model=user needs a security_domain"
        )
    if hv.security_model == "none" and hv.security_domain:
        raise ParameterError(
            f"{field}/security_domain", "security_domain is only used with security_model=user"
        )
    if hv.initrd_path and not hv.kernel_path:
        raise ParameterError(f"{field}/initrd_path", "initrd_path needs kernel_path")
    if hv.vnc_password_file and not hv.vnc_bind_address:
        raise ParameterError(f"{field}/vnc_password_file", "a VNC password needs vnc_bind_address")


def _readable_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise HypervisorError(f"{what} {path} does not exist on this node", ECode.ENVIRON)
    if not os.access(path, os.R_OK):
        raise HypervisorError(f"{what} {path} is not readable", ECode.ENVIRON)


def vnc_password(hv: KvmHvParams) -> str | None:
    if not hv.vnc_password_file:
        return None
    _readable_file(hv.vnc_password_file, "VNC password file")
    with open(hv.vnc_password_file, encoding="utf-8", errors="replace") as f:
        pw = f.readline().strip()
    if not pw:
        raise HypervisorError(f"VNC password file {hv.vnc_password_file} is empty", ECode.ENVIRON)
    return pw


def runas_user(hv: KvmHvParams) -> str | None:
    if hv.security_model != "user":
        return None
    try:
        pwd.getpwnam(hv.security_domain)
    except KeyError:
        raise HypervisorError(
            f"security_domain user {hv.security_domain!r} does not exist on this node",
            ECode.ENVIRON,
        ) from None
    return hv.security_domain


def check_node(hv: KvmHvParams, spec: InstanceSpec | None = None) -> None:
    check_syntax(hv)
    if not os.path.isfile(hv.kvm_path) or not os.access(hv.kvm_path, os.X_OK):
        raise HypervisorError(
            f"QEMU binary {hv.kvm_path} is missing or not executable on this node", ECode.ENVIRON
        )
    if hv.kernel_path:
        _readable_file(hv.kernel_path, "kernel")
    if hv.initrd_path:
        _readable_file(hv.initrd_path, "initrd")
    vnc_password(hv)
    runas_user(hv)
    if spec is None:
        return
    for nic in spec.nics:
        p = nic.nicparams
        if p.mode == "bridged" and not setup.bridge_exists(p.link):
            raise HypervisorError(
                f"NIC {nic.index}: bridge {p.link!r} does not exist on this node", ECode.ENVIRON
            )
        if p.mode == "routed":
            if not nic.ip:
                raise HypervisorError(f"NIC {nic.index}: routed mode needs an IP", ECode.INVAL)
            setup.resolve_table(p.link)
        if p.mode in ("openvswitch", "ovn"):
            from corral.network import ovs, ovsnic  # ovsdbapp: only for OVS NICs
            from corral.paths import Paths

            bridge = p.link or (ovsnic.DEFAULT_OVN_BRIDGE if p.mode == "ovn" else "")
            if not bridge:
                raise HypervisorError(
                    f"NIC {nic.index}: mode openvswitch needs link=<OVS bridge>", ECode.INVAL
                )
            db = str(Paths.from_env().host_path(ovs.OVS_DB_SOCK))
            if not ovs.bridge_exists(db, bridge):
                raise HypervisorError(
                    f"NIC {nic.index}: OVS bridge {bridge!r} does not exist on this node",
                    ECode.ENVIRON,
                )
