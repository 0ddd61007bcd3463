"""The ``kvm-ifup``/``kvm-ifdown`` environment, built and read back (pure).

Layer: pure builders (imports ``corral.errors``; ``corral.rpc.types`` only for
type checking, so ``kvm-ifup`` never loads msgspec). The environment is
exactly Ganeti's (``hv_base.ConfigureNIC``) so admin scripts written for
Ganeti's ``kvm-vif-bridge`` keep working:

    PATH (+ ``:/sbin:/usr/sbin``), INSTANCE, MAC, MODE, INTERFACE (tap),
    INTERFACE_INDEX, INTERFACE_UUID, TAGS (space-separated instance tags),
    and when set: IP, INTERFACE_NAME, LINK, VLAN, BRIDGE (= LINK, bridged
    mode only), NETWORK_* (the NIC's network, ``objects.Network.HooksDict``).

``kvm-ifdown`` gets the same minus TAGS (:func:`ifdown_env`): tags live only
in the cluster config and may have changed since ``kvm-ifup`` ran, so a
script must undo what the tags made it do without being told them again
(Ganeti's ifdown design). Everything else comes from the runtime file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.errors import ECode, HypervisorError

if TYPE_CHECKING:
    from corral.rpc.types import NicSpec

MODES = ("bridged", "routed", "openvswitch", "ovn")
# The second argument of ``kvm-ifdown``: after an instance shutdown on its
# primary, on the source after a successful migration, on the target after a
# failed one, after a NIC hot-remove.
IFDOWN_CONTEXTS = ("shutdown", "migrate-source", "migrate-failed", "hot-remove")
# Older spellings still accepted (scripts written for them call kvm-ifdown so).
IFDOWN_CONTEXT_ALIASES = {"migrate-success": "migrate-source"}
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def ifdown_context(context: str) -> str:
    """The canonical name of an ifdown context (aliases resolved), or raise ``INVAL``."""
    context = IFDOWN_CONTEXT_ALIASES.get(context, context)
    if context not in IFDOWN_CONTEXTS:
        raise HypervisorError(
            f"unknown context {context!r} (expected one of {', '.join(IFDOWN_CONTEXTS)})",
            ECode.INVAL,
        )
    return context


def ifup_env(
    instance: str,
    tags: list[str],
    nic: NicSpec,
    tap: str,
    *,
    search_path: str | None = None,
) -> dict[str, str]:
    """The environment ``kvm-ifup`` runs with.

    ``search_path`` defaults to this process's ``PATH``; like Ganeti,
    ``/sbin:/usr/sbin`` is appended so admin scripts find ``ip``/``bridge``.
    Only keys of ``nic.network`` starting with ``NETWORK_`` and with a value
    are passed (Ganeti omits unset network fields too).
    """
    return _env(instance, tags, nic, tap, search_path)


def ifdown_env(
    instance: str, nic: NicSpec, tap: str, *, search_path: str | None = None
) -> dict[str, str]:
    """The environment ``kvm-ifdown`` runs with: :func:`ifup_env` without ``TAGS``.

    ``nic`` must come from the runtime file (what is really plugged in), not
    from the config, which may have changed since ``kvm-ifup`` ran.
    """
    return _env(instance, None, nic, tap, search_path)


def _env(
    instance: str, tags: list[str] | None, nic: NicSpec, tap: str, search_path: str | None
) -> dict[str, str]:
    if search_path is None:
        search_path = os.environ.get("PATH", _DEFAULT_PATH)
    params = nic.nicparams
    env = {
        "PATH": f"{search_path}:/sbin:/usr/sbin",
        "INSTANCE": instance,
        "MAC": nic.mac,
        "MODE": params.mode,
        "INTERFACE": tap,
        "INTERFACE_INDEX": str(nic.index),
        "INTERFACE_UUID": nic.uuid,
    }
    if tags is not None:
        env["TAGS"] = " ".join(tags)
    if nic.ip:
        env["IP"] = nic.ip
    if nic.name:
        env["INTERFACE_NAME"] = nic.name
    if params.link:
        env["LINK"] = params.link
    if params.vlan:
        env["VLAN"] = params.vlan
    if params.mode == "bridged" and params.link:
        env["BRIDGE"] = params.link
    for key, value in sorted(nic.network.items()):
        if key.startswith("NETWORK_") and value:
            env[key] = str(value)
    return env


@dataclass(frozen=True)
class NicEnv:
    """What the built-in ``kvm-ifup``/``kvm-ifdown`` need, read from the environment."""

    interface: str
    mode: str
    link: str = ""
    vlan: str = ""
    ip: str = ""
    instance: str = ""
    index: str = ""


def parse_env(env: Mapping[str, str]) -> NicEnv:
    """Read the variables the built-in setup uses.

    Raises :class:`HypervisorError` (``INVAL``) when ``INTERFACE`` or ``MODE``
    is missing, with the messages Ganeti's scripts print.
    """
    interface = env.get("INTERFACE", "")
    mode = env.get("MODE", "")
    if not interface:
        raise HypervisorError("No network interface specified (INTERFACE is not set)", ECode.INVAL)
    if not mode:
        raise HypervisorError("MODE not specified", ECode.INVAL)
    return NicEnv(
        interface=interface,
        mode=mode,
        link=env.get("LINK", ""),
        vlan=env.get("VLAN", ""),
        ip=env.get("IP", ""),
        instance=env.get("INSTANCE", ""),
        index=env.get("INTERFACE_INDEX", ""),
    )


@dataclass(frozen=True)
class VlanPlan:
    """Ganeti's VLAN syntax resolved: at most one untagged (pvid) VLAN, tagged ones."""

    untagged: int | None
    tagged: tuple[int, ...]

    @property
    def vids(self) -> tuple[int, ...]:
        return ((self.untagged,) if self.untagged is not None else ()) + self.tagged


def parse_vlan(vlan: str) -> VlanPlan | None:
    """Parse ``.10`` (untagged), ``:20:30`` (tagged trunk), ``.10:20:30`` (both).

    A bare leading number (``10``, ``10:20``) is untagged, as in Ganeti's man
    page ("``n`` or ``.n``"). Empty → ``None`` (no VLAN handling at all).
    Raises :class:`HypervisorError` (``INVAL``) on bad syntax, VLAN ids outside
    1-4094, or the same id twice.
    """
    if not vlan:
        return None
    head, *rest = vlan.split(":")
    untagged_text = head[1:] if head.startswith(".") else head
    texts = ([untagged_text] if head else []) + rest

    def vid(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= 4094:
            raise HypervisorError(
                f"Invalid VLAN {vlan!r}: {text!r} is not a VLAN id (1-4094); "
                "expected '.10', ':20:30' or '.10:20:30'",
                ECode.INVAL,
            )
        return int(text)

    ids = [vid(t) for t in texts]
    if len(set(ids)) != len(ids):
        raise HypervisorError(f"Invalid VLAN {vlan!r}: a VLAN id appears twice", ECode.INVAL)
    if head:
        return VlanPlan(untagged=ids[0], tagged=tuple(ids[1:]))
    return VlanPlan(untagged=None, tagged=tuple(ids))
