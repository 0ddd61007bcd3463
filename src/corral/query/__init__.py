"""Queries: the fields of ``list`` commands, filters, and live data.

Layer: master core (imports config, rpc client, job queue). Ganeti's query2
shapes: a field has a name, a title, a kind and a doc; a result is
``{"fields": [...], "data": [[[status, value], ...], ...]}`` with Ganeti's
result statuses; filters are Ganeti's list form (``["&", ["=", "name",
"x"], ...]``). Queries read the in-memory config without taking locks and
fetch live data from nodes only when a requested field needs it.

Modules: ``base`` (statuses, kinds, Field), ``instances``/``nodes``/``jobs``
(field tables), ``fields`` (all resources), ``filters``, ``runner``.
"""

from corral.query.base import NODATA, OFFLINE, UNAVAIL, Field, _nicesort_key
from corral.query.fields import FIELDS, resolve_fields
from corral.query.filters import compile_filter
from corral.query.runner import QueryRunner

__all__ = [
    "FIELDS",
    "NODATA",
    "OFFLINE",
    "UNAVAIL",
    "Field",
    "QueryRunner",
    "_nicesort_key",
    "compile_filter",
    "resolve_fields",
]
