"""Every queryable resource and its fields.

Layer: master core (queries).
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.errors import ParameterError
from corral.query.base import (
    Field,
)
from corral.query.instances import _instance_fields
from corral.query.jobs import _group_fields, _job_fields
from corral.query.networks import _network_fields
from corral.query.nodes import _node_fields

FIELDS: dict[str, dict[str, Field]] = {
    "instance": _instance_fields(),
    "node": _node_fields(),
    "group": _group_fields(),
    "job": _job_fields(),
    "network": _network_fields(),
}


def resolve_fields(what: str, names: Iterable[str]) -> list[Field]:
    table = FIELDS.get(what)
    if table is None:
        raise ParameterError("what", f"unknown resource {what!r}; known: {', '.join(FIELDS)}")
    out = []
    for n in names:
        if n not in table:
            raise ParameterError("fields", f"unknown field {n!r} for {what}s")
        out.append(table[n])
    return out
