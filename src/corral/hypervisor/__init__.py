"""Hypervisor registry and parameter inheritance for hypervisor parameters.

Layer: driver registry. The master only uses :func:`params_for` (pure syntax
checks); nodes instantiate drivers with :func:`get`.
"""

from __future__ import annotations

from typing import Any

from corral.errors import ParameterError
from corral.hypervisor.base import Hypervisor
from corral.hypervisor.fake import FakeHypervisor
from corral.hypervisor.kvm.driver import KvmHypervisor
from corral.objects import Cluster, Instance, NodeGroup
from corral.params import ParamGroup
from corral.paths import Paths

HYPERVISORS: dict[str, type[Hypervisor]] = {
    FakeHypervisor.NAME: FakeHypervisor,
    KvmHypervisor.NAME: KvmHypervisor,
}


def hv_class(name: str, field: str = "hypervisor") -> type[Hypervisor]:
    try:
        return HYPERVISORS[name]
    except KeyError:
        raise ParameterError(
            field, f"unknown hypervisor {name!r}; known: {', '.join(HYPERVISORS)}"
        ) from None


def params_for(name: str) -> ParamGroup[Any]:
    return hv_class(name).PARAMS


def get(name: str, paths: Paths) -> Hypervisor:
    return hv_class(name)(paths)


def fill_hv(cluster: Cluster, group: NodeGroup | None, inst: Instance) -> dict[str, Any]:
    g = params_for(inst.hypervisor)
    return g.fill_dict(
        cluster.hvparams.get(inst.hypervisor),
        group.hvparams.get(inst.hypervisor) if group else None,
        inst.hvparams,
    )
