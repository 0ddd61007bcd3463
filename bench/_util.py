"""Shared helpers for the benchmark scripts: statistics, tables, figure lines.

Benchmarks report medians of many runs (never single runs), a p99 or the
min/max, the number of runs, and a ratio against a floor measured in the
same run. Each script ends with one ``<name>: corral=… floor=… ratio=…``
line per figure.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on the sorted values."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


@dataclass
class Row:
    name: str
    values: list[float]  # raw samples, in the unit below
    unit: str  # "ms", "s", "jobs/s", ...
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def _num(v: float) -> str:
    if v != v:  # NaN
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def print_table(title: str, rows: list[Row]) -> None:
    headers = ["measurement", "unit", "median", "p99", "min", "max", "runs", "note"]
    cells = [
        [
            r.name,
            r.unit,
            _num(r.median),
            _num(percentile(r.values, 99)),
            _num(min(r.values)),
            _num(max(r.values)),
            str(len(r.values)),
            r.note,
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
    sys.stdout.flush()


def figure(name: str, corral: float, floor: float | None = None) -> str:
    if floor is None:
        return f"{name}: value={_num(corral)}"
    return f"{name}: corral={_num(corral)} floor={_num(floor)} ratio={corral / floor:.2f}"


def machine_note() -> str:
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
