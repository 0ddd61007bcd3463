"""Query building blocks: result statuses, field kinds, the Field record.

Layer: master core (pure).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RS_NORMAL, RS_UNKNOWN, RS_NODATA, RS_UNAVAIL, RS_OFFLINE = 0, 1, 2, 3, 4

QFT_TEXT, QFT_BOOL, QFT_NUMBER, QFT_UNIT, QFT_TIMESTAMP, QFT_OTHER = (
    "text",
    "bool",
    "number",
    "unit",
    "timestamp",
    "other",
)


class _NoData:
    def __init__(self, status: int) -> None:
        self.status = status


NODATA = _NoData(RS_NODATA)
UNAVAIL = _NoData(RS_UNAVAIL)
OFFLINE = _NoData(RS_OFFLINE)


@dataclass(frozen=True)
class Field:
    name: str
    title: str
    kind: str
    doc: str
    get: Callable[[Any, Any], Any]  # (context, object) -> value or _NoData
    live: bool = False

    def definition(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "kind": self.kind, "doc": self.doc}


_DIGITS_RE = re.compile(r"(\d+)")


def _nicesort_key(name: str) -> list[Any]:
    """Sort key: digit runs compare as numbers (``node2`` < ``node10``).

    Splitting on a captured ``\\d+`` puts text at even and numbers at odd
    positions, so two keys only ever compare text with text and numbers
    with numbers.
    """
    parts: list[Any] = _DIGITS_RE.split(name)
    parts[1::2] = map(int, parts[1::2])
    return parts
