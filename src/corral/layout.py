"""Where a ``gnt-*`` command finds the master, as text.

Layer: bottom (imports nothing of Corral). :mod:`corral.paths` builds every
location under the root prefix as a ``Path``; the one a command needs is
also here, so the CLI does not import pathlib (with the ``urllib.parse``
and ``ipaddress`` it pulls in, ~5 ms of every command's start).
"""

from __future__ import annotations

import os

ROOT_ENV = "CORRAL_ROOT"  # the root prefix (default /): tests, virtual clusters
MASTER_SOCKET = "run/corral/socket/corral-master"  # relative to the root


def master_socket() -> str:
    """The master's LUXI socket under ``$CORRAL_ROOT``."""
    return os.path.join(os.environ.get(ROOT_ENV) or "/", MASTER_SOCKET)
