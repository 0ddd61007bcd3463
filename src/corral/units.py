"""Sizes with Ganeti's units (``512``, ``512M``, ``1.5G``, ``2T``), in MiB.

Layer: bottom (imports ``errors`` only). Apart from :mod:`corral.params`
because the CLI parses ``--disk …:size=8M`` and ``grow-disk … 8M`` itself,
and importing params (msgspec) would cost that command ~15 ms of start-up.
"""

from __future__ import annotations

import re

from corral.errors import ParameterError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}
MAX_SIZE_MIB = 1024**3  # 1 PiB: anything larger is a typo, not a disk.


def parse_size(text: str, field: str = "size") -> int:
    """Parse a size with an optional unit (``512``, ``512M``, ``1.5G``, ``2T``) into MiB.

    Like Ganeti's ``ParseUnit``: a bare number is MiB; fractional results are
    rounded up to whole MiB.
    """
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ParameterError(field, f"invalid size {text!r} (expected e.g. 512M, 10G)")
    value = float(m.group(1)) * _SIZE_FACTORS[m.group(2).lower()]
    mib = int(-(-value // 1))
    if mib <= 0:
        raise ParameterError(field, f"size must be positive, got {text!r}")
    if mib > MAX_SIZE_MIB:
        raise ParameterError(field, f"size {text!r} is absurdly large (max 1P)")
    return mib
