"""Node-side code: the RPC dispatcher and the functions it runs.

:func:`load` imports every handler module and checks that each call of the
RPC table has exactly one handler.
"""

from __future__ import annotations


def load() -> None:
    from corral.backend import cluster, node, osapi  # noqa: F401  (register handlers)
    from corral.backend.dispatch import check_complete

    check_complete()
