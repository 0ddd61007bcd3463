"""Ganeti's filter lists compiled into predicates.

Layer: master core (queries).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from corral.errors import ParameterError
from corral.query.base import (
    _NoData,
)
from corral.query.fields import FIELDS

# --- filters ---------------------------------------------------------------------------

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "=[]": lambda a, b: isinstance(a, list) and b in a,
}

Row = Callable[[str], Any]


def compile_filter(what: str, flt: Any) -> tuple[Callable[[Row], bool], set[str]]:
    """Compile a Ganeti filter list into a predicate; returns it and the fields it uses."""
    used: set[str] = set()
    table = FIELDS[what]

    def comp(node: Any) -> Callable[[Row], bool]:
        if not isinstance(node, list) or not node or not isinstance(node[0], str):
            raise ParameterError("filter", f"invalid filter element {node!r}")
        op, args = node[0], node[1:]
        if op in ("&", "|"):
            subs = [comp(a) for a in args]
            if op == "&":
                return lambda row: all(s(row) for s in subs)
            return lambda row: any(s(row) for s in subs)
        if op == "!":
            if len(args) != 1:
                raise ParameterError("filter", "'!' takes exactly one operand")
            sub = comp(args[0])
            return lambda row: not sub(row)
        if op == "?":
            if len(args) != 1:
                raise ParameterError("filter", "'?' takes exactly one field")
            fname = _field(args[0])
            return lambda row: bool(_val(row(fname)))
        if op in _CMP or op == "=~":
            if len(args) != 2:
                raise ParameterError("filter", f"{op!r} takes a field and a value")
            fname = _field(args[0])
            value = args[1]
            if op == "=~":
                try:
                    rx = re.compile(str(value))
                except re.error as err:
                    raise ParameterError("filter", f"invalid regular expression: {err}") from None
                return lambda row: (
                    isinstance(_val(row(fname)), str) and bool(rx.search(_val(row(fname))))
                )
            cmp = _CMP[op]

            def pred(row: Row) -> bool:
                v = _val(row(fname))
                try:
                    return cmp(v, value)
                except TypeError:
                    return False

            return pred
        raise ParameterError("filter", f"unknown filter operator {op!r}")

    def _field(name: Any) -> str:
        if not isinstance(name, str) or name not in table:
            raise ParameterError("filter", f"unknown field {name!r} for {what}s")
        used.add(name)
        return name

    if flt is None:
        return (lambda row: True), used
    return comp(flt), used


def _val(v: Any) -> Any:
    return None if isinstance(v, _NoData) else v
