"""The OS query (``OpOsDiagnose``, ``gnt-os``): per-node diagnoses merged per OS. Pure.

Layer: master core (queries; imports ``rpc``). Ganeti's rules
(``cmdlib/operating_system.py``): an OS is valid when the definition that
takes effect on every node that answered is valid; a node without it makes
it invalid; a node that did not answer is left out rather than making every
OS invalid. Variants, parameters and API versions are those all nodes
agree on. Unless a query asks for the ``valid``, ``hidden`` or
``blacklisted`` field, OSes that are invalid, hidden or blacklisted are
left out (Ganeti's legacy behaviour that ``gnt-os list`` relies on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.errors import ECode, OpPrereqError
from corral.query.base import _nicesort_key
from corral.rpc.client import RpcResult
from corral.rpc.types import OsDefinition, OsDiagnoseResult, OsParameter


@dataclass
class OsInfo:
    name: str
    valid: bool
    variants: list[str] = field(default_factory=list)
    parameters: list[OsParameter] = field(default_factory=list)
    api_versions: list[int] = field(default_factory=list)
    # node name → every definition of this name on the node (the first takes effect)
    node_status: dict[str, list[OsDefinition]] = field(default_factory=dict)
    hidden: bool = False
    blacklisted: bool = False


def _common(first: list[Any], others: list[list[Any]]) -> list[Any]:
    """Items of ``first`` (in its order) that every list of ``others`` has too."""
    return [x for x in first if all(x in o for o in others)]


def merge(results: Mapping[str, RpcResult[OsDiagnoseResult]]) -> dict[str, OsInfo]:
    """Per-OS view of the nodes' ``os_diagnose`` answers (keyed by node name)."""
    good = sorted((n for n, r in results.items() if not r.failed), key=_nicesort_key)
    by_os: dict[str, dict[str, list[OsDefinition]]] = {}
    for node in good:
        payload = results[node].payload
        assert payload is not None
        for defn in payload.oses:
            entry = by_os.setdefault(defn.name, {n: [] for n in good})
            entry[node].append(defn)
    out: dict[str, OsInfo] = {}
    for name, per_node in by_os.items():
        active = [defs[0] if defs else None for defs in per_node.values()]
        valid = all(d is not None and d.valid for d in active)
        info = OsInfo(name=name, valid=valid, node_status=per_node)
        if valid:
            first, *rest = [d for d in active if d is not None]
            info.variants = _common(first.variants, [d.variants for d in rest])
            info.parameters = _common(first.parameters, [d.parameters for d in rest])
            info.api_versions = _common(first.api_versions, [d.api_versions for d in rest])
        out[name] = info
    return out


def _node_entry(d: OsDefinition) -> list[Any]:
    """Ganeti's per-node tuple: path, status, diagnose, variants, parameters, API versions."""
    return [
        d.path,
        d.valid,
        d.diagnose,
        list(d.variants),
        [[p.name, p.description] for p in d.parameters],
        list(d.api_versions),
    ]


def value(info: OsInfo, name: str) -> Any:
    """One field of an OS, as Ganeti's ``OpOsDiagnose`` returns it."""
    if name == "name":
        return info.name
    if name == "valid":
        return info.valid
    if name == "variants":
        return list(info.variants)
    if name == "parameters":
        return [[p.name, p.description] for p in info.parameters]
    if name == "api_versions":
        return list(info.api_versions)
    if name == "node_status":
        return {n: [_node_entry(d) for d in defs] for n, defs in info.node_status.items()}
    if name == "hidden":
        return info.hidden
    if name == "blacklisted":
        return info.blacklisted
    if name in ("os_hvp", "osparams"):
        return {}  # cluster-wide per-OS parameters: not in Corral's config (yet)
    raise OpPrereqError(f"unknown OS field {name!r}", ECode.INVAL)


def rows(infos: Mapping[str, OsInfo], fields: Sequence[str], names: Sequence[str]) -> list[Any]:
    """The rows of an OS query: sorted by name, filtered like Ganeti's ``LUOsDiagnose``."""
    if names:
        missing = [n for n in names if n not in infos]
        if missing:
            raise OpPrereqError(f"unknown OS(es): {', '.join(missing)}", ECode.NOENT)
        selected = [infos[n] for n in dict.fromkeys(names)]
    else:
        selected = sorted(infos.values(), key=lambda i: _nicesort_key(i.name))
    if "valid" not in fields:
        selected = [i for i in selected if i.valid]
    if "hidden" not in fields:
        selected = [i for i in selected if not i.hidden]
    if "blacklisted" not in fields:
        selected = [i for i in selected if not i.blacklisted]
    return [[value(i, f) for f in fields] for i in selected]
