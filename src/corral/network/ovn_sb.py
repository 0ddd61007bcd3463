"""Read-only views of the OVN southbound database (tests, bench, verify).

Layer: driver (imports ``corral.errors``, ``corral.network.ovsdb`` and
``corral.network.ovn_nb`` for the shared plumbing and :class:`OvnError`;
``ovsdbapp`` lazily). Corral never writes SB: ovn-northd and the chassis'
ovn-controllers own it. Two tools:

* :func:`port_binding`: a port's ``Port_Binding`` now (main chassis,
  additional chassis, requested ones, ``options`` with
  ``additional-chassis-activated``, ``up``), over the cached connection.
* :class:`BindingWatcher`: its own connection that monitors one port's
  ``Port_Binding`` (after the initial dump, a server-side condition lets
  only that row travel) and records every change of
  ``chassis``/``additional_chassis`` with a timestamp, from inside the IDL's
  update loop (after each whole SB transaction: no half-applied states, and
  nothing is missed between polls). "No fight" during a migration is
  :meth:`BindingWatcher.chassis_path` going ``[src, dst]``: the main chassis
  changed exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.errors import ECode
from corral.network.ovn_nb import OvnError
from corral.network.ovsdb import (
    CONNECT_TIMEOUT,
    Db,
    connect_db,
    normalize_remote,
    open_db,
    transact,
)

SB_SCHEMA = "OVN_Southbound"
_SB_TABLES = ("Port_Binding", "Chassis")
OPT_ACTIVATED = "additional-chassis-activated"


@dataclass(frozen=True)
class BindingState:
    """One ``Port_Binding`` row, chassis as names."""

    logical_port: str
    chassis: str | None
    additional_chassis: tuple[str, ...]
    requested_chassis: str | None
    requested_additional_chassis: tuple[str, ...]
    options: Mapping[str, str] = field(default_factory=dict)
    up: bool | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Every chassis holding the port: the main one, then additional ones."""
        return ((self.chassis,) if self.chassis else ()) + self.additional_chassis

    @property
    def activated(self) -> tuple[str, ...]:
        """Additional chassis that saw the activation packet (RARP)."""
        value = self.options.get(OPT_ACTIVATED, "")
        return tuple(p for p in value.split(",") if p)


@dataclass(frozen=True)
class BindingChange:
    """The binding as it became at ``at`` (``time.monotonic()``; ``wall``: ``time.time()``)."""

    at: float
    wall: float
    chassis: str | None
    additional_chassis: tuple[str, ...]
    state: BindingState | None  # None: the row went away


def _names(rows: Any) -> tuple[str, ...]:
    return tuple(sorted(str(r.name) for r in rows))


def _binding(row: Any) -> BindingState:
    chassis = list(row.chassis)
    requested = list(row.requested_chassis)
    up = list(row.up)
    return BindingState(
        logical_port=str(row.logical_port),
        chassis=str(chassis[0].name) if chassis else None,
        additional_chassis=_names(row.additional_chassis),
        requested_chassis=str(requested[0].name) if requested else None,
        requested_additional_chassis=_names(row.requested_additional_chassis),
        options=dict(row.options),
        up=bool(up[0]) if up else None,
    )


def _find(d: Db, lport: str) -> Any | None:
    for row in d.idl.tables["Port_Binding"].rows.values():
        if row.logical_port == lport:
            return row
    return None


def port_binding(remote: str, lport: str) -> BindingState | None:
    """The ``Port_Binding`` of logical port ``lport`` at SB ``remote``, or ``None``."""

    def connect(fresh: bool) -> Db:
        return open_db(remote, SB_SCHEMA, _SB_TABLES, error=OvnError, fresh=fresh)

    def fn(d: Db, txn: Any) -> BindingState | None:
        row = _find(d, lport)
        return None if row is None else _binding(row)

    result = transact(connect, f"Cannot read the port binding of {lport}", fn, error=OvnError)
    return result if isinstance(result, BindingState) else None


class BindingWatcher:
    """Follow one port's SB binding; record each change of its chassis.

    Use as a context manager (or :meth:`start`/:meth:`stop`). The first
    record is the state found at start (``state=None`` if there is no
    binding yet). :attr:`changes` is a copy, safe to read any time.
    """

    def __init__(self, remote: str, lport: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.remote = normalize_remote(remote, OvnError)
        self.lport = lport
        self.timeout = timeout
        self._changes: list[BindingChange] = []
        self._current: BindingState | None = None
        self._cond = threading.Condition()
        self._db: Db | None = None

    # --- recording (runs in the connection's thread) ---

    def _record(self, state: BindingState | None) -> None:
        key = (state.chassis, state.additional_chassis) if state is not None else (None, ())
        with self._cond:
            self._current = state
            last = self._changes[-1] if self._changes else None
            if last is None or (last.chassis, last.additional_chassis) != key:
                self._changes.append(
                    BindingChange(time.monotonic(), time.time(), key[0], key[1], state)
                )
            self._cond.notify_all()

    def _rescan(self, idl: Any) -> None:
        rows = [r for r in idl.tables["Port_Binding"].rows.values() if r.logical_port == self.lport]
        self._record(_binding(rows[0]) if rows else None)

    def _idl_class(self) -> Any:
        from ovsdbapp.backend.ovs_idl import connection  # type: ignore[import-untyped,unused-ignore]

        watcher = self

        class WatchIdl(connection.OvsdbIdl):  # type: ignore[misc]
            def notify(self, event: str, row: Any, updates: Any = None) -> None:
                # Chassis rows matter too: a binding's chassis name comes from them.
                watcher._rescan(self)

        return WatchIdl

    # --- control ---

    def start(self) -> BindingWatcher:
        if self._db is not None:
            return self
        db = connect_db(
            self.remote, SB_SCHEMA, _SB_TABLES, self.timeout, OvnError, idl_class=self._idl_class()
        )
        # Only this port's row travels from now on (the dump already came).
        with db.conn.lock:
            db.idl.cond_change("Port_Binding", [["logical_port", "==", self.lport]])
            self._rescan(db.idl)
        self._db = db
        return self

    def stop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> BindingWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- reading ---

    @property
    def changes(self) -> list[BindingChange]:
        with self._cond:
            return list(self._changes)

    @property
    def current(self) -> BindingState | None:
        with self._cond:
            return self._current

    def chassis_path(self) -> list[str | None]:
        """The main chassis over time, consecutive repeats collapsed."""
        path: list[str | None] = []
        for change in self.changes:
            if not path or path[-1] != change.chassis:
                path.append(change.chassis)
        return path

    def wait_for(
        self, predicate: Callable[[BindingState | None], bool], timeout: float
    ) -> BindingState | None:
        """Block until ``predicate(current)`` holds; raise ``OvnError`` (``STATE``) on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._current):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OvnError(
                        f"Port binding of {self.lport} did not reach the expected state within "
                        f"{timeout:g}s (now {self._current})",
                        ECode.STATE,
                    )
                self._cond.wait(left)
            return self._current
