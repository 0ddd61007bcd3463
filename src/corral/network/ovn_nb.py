"""The OVN northbound database as Corral (the CMS) uses it (master side).

Layer: driver (imports ``corral.errors``, ``corral.network.ovsdb`` for the
shared OVSDB plumbing; ``ovsdbapp`` lazily). Conventions (``notes``/issue 7):

* one logical switch per Corral network, ``external_ids:corral-network`` =
  the network's UUID;
* one logical switch port per NIC on such a network, named by the NIC's
  UUID, ``addresses`` ``["<mac> <ip>"]`` (or ``["<mac>"]``),
  ``external_ids:corral-instance`` = instance name,
  ``options:requested-chassis`` = the primary node (chassis) name;
* live migration (the seed thread's workflow, in the form OVN adopted):
  :meth:`NbClient.begin_migration` sets ``requested-chassis=<src>,<dst>``
  and ``activation-strategy=rarp`` in one transaction, so the destination
  may bind the port but keeps it blocked until QEMU's RARP arrives there;
  :meth:`NbClient.finish_migration` narrows to ``<dst>`` and drops the
  strategy; :meth:`NbClient.revert_migration` goes back to ``<src>``.

Every operation is one OVSDB transaction and idempotent (safe to repeat
after a crash). Errors: :class:`OvnError` ``ENVIRON`` naming the remote when
NB cannot be reached, ``NOENT``/``EXISTS``/``NOTUNIQUE`` for the database's
state, :class:`~corral.errors.ParameterError` (``INVAL``) for bad names and
addresses. Calls block; async callers run them in a thread.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.errors import CorralError, ECode, ParameterError
from corral.network.ovsdb import CONNECT_TIMEOUT, Db, normalize_remote, open_db, transact

NB_SCHEMA = "OVN_Northbound"
_NB_TABLES = ("Logical_Switch", "Logical_Switch_Port")
KEY_NETWORK = "corral-network"
KEY_INSTANCE = "corral-instance"
OPT_CHASSIS = "requested-chassis"
OPT_ACTIVATION = "activation-strategy"
ACTIVATION = "rarp"  # what QEMU sends when the guest resumes (announce-self)

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SWITCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")
# Corral node names (hostnames); no commas: requested-chassis is a list.
_CHASSIS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class OvnError(CorralError):
    """OVN's databases refused or could not be reached (the remote is named)."""

    default_code = ECode.ENVIRON


@dataclass(frozen=True)
class SslFiles:
    """Client key, certificate and CA certificate for an ``ssl:`` remote."""

    private_key: str
    certificate: str
    ca_cert: str


@dataclass(frozen=True)
class PortSpec:
    """What Corral wants a NIC's logical switch port to be."""

    name: str  # the NIC's UUID
    mac: str
    ip: str | None
    instance: str
    chassis: str  # the primary node; "" leaves options:requested-chassis alone


@dataclass(frozen=True)
class PortState:
    """A logical switch port as NB has it."""

    name: str
    switch: str | None  # None: an orphan no switch references
    addresses: tuple[str, ...]
    requested_chassis: tuple[str, ...]  # main first, then additional ones
    activation_strategy: tuple[str, ...]
    external_ids: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    up: bool | None = None

    @property
    def instance(self) -> str | None:
        return self.external_ids.get(KEY_INSTANCE)

    @property
    def migrating(self) -> bool:
        """Marked for two chassis (a migration began and did not settle)."""
        return len(self.requested_chassis) > 1


def port_addresses(mac: str, ip: str | None) -> list[str]:
    """``addresses`` of a NIC's port (pure): ``["<mac> <ip>"]`` or ``["<mac>"]``."""
    return [f"{mac} {ip}" if ip else mac]


def _check_uuid(what: str, name: str) -> None:
    if not isinstance(name, str) or not _UUID_RE.match(name):
        raise ParameterError(what, f"{name!r} is not a NIC UUID (logical switch port name)")


def _check_switch(name: str) -> None:
    if not isinstance(name, str) or not _SWITCH_RE.match(name):
        raise ParameterError(
            "ovn_switch", f"{name!r} is not a valid logical switch name (letters, digits, _.:-)"
        )


def _check_chassis(what: str, name: str) -> None:
    if not isinstance(name, str) or not _CHASSIS_RE.match(name):
        raise ParameterError(what, f"{name!r} is not a valid chassis (node) name")


def _check_spec(spec: PortSpec) -> None:
    _check_uuid("name", spec.name)
    if not _MAC_RE.match(spec.mac):
        raise ParameterError("mac", f"{spec.mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    if spec.ip:
        try:
            ipaddress.ip_address(spec.ip)
        except ValueError:
            raise ParameterError("ip", f"{spec.ip!r} is not an IP address") from None
    if not spec.instance:
        raise ParameterError("instance", "the instance name is empty")
    if spec.chassis:
        _check_chassis("chassis", spec.chassis)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


class NbClient:
    """A typed client of OVN_Northbound at ``remote`` (``tcp:``/``ssl:``/``unix:``).

    The connection is made on first use and cached per process
    (:func:`corral.network.ovsdb.open_db`); ``ssl`` sets the process-wide SSL
    files of the ``ovs`` library before connecting.
    """

    def __init__(
        self, remote: str, *, ssl: SslFiles | None = None, timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.remote = normalize_remote(remote, OvnError)
        self.timeout = timeout
        self._ssl = ssl

    # --- plumbing ---

    def _connect(self, fresh: bool) -> Db:
        if self._ssl is not None:
            import ovs.stream  # type: ignore[import-untyped,unused-ignore]

            ovs.stream.Stream.ssl_set_private_key_file(self._ssl.private_key)
            ovs.stream.Stream.ssl_set_certificate_file(self._ssl.certificate)
            ovs.stream.Stream.ssl_set_ca_cert_file(self._ssl.ca_cert)
        return open_db(
            self.remote, NB_SCHEMA, _NB_TABLES, error=OvnError, timeout=self.timeout, fresh=fresh
        )

    def _run(self, what: str, fn: Any) -> Any:
        return transact(self._connect, what, fn, error=OvnError)

    def connect(self) -> None:
        """Connect now (else on first use); raises :class:`OvnError` ``ENVIRON``."""
        self._connect(False)

    # --- logical switches ---

    def ensure_switch(self, name: str, network_uuid: str) -> bool:
        """Create logical switch ``name`` for a network, or adopt it; True if created.

        A switch of that name without ``corral-network`` (made by the admin)
        is adopted; one that belongs to another network is ``EXISTS``.
        """
        _check_switch(name)
        _check_uuid("network_uuid", network_uuid)

        def fn(d: Db, txn: Any) -> bool:
            row = _one_switch(d, name)
            if row is None:
                row = txn.insert(d.idl.tables["Logical_Switch"])
                row.name = name
                row.external_ids = {KEY_NETWORK: network_uuid}
                return True
            owner = row.external_ids.get(KEY_NETWORK)
            if owner not in (None, network_uuid):
                raise OvnError(
                    f"Logical switch {name} already belongs to network {owner}", ECode.EXISTS
                )
            if owner is None:
                row.setkey("external_ids", KEY_NETWORK, network_uuid)
            return False

        return bool(self._run(f"Cannot create logical switch {name}", fn))

    def delete_switch(self, name: str, *, network_uuid: str | None = None) -> bool:
        """Delete logical switch ``name``; False if it was not there.

        With ``network_uuid`` a switch owned by another network is left
        alone (False). A switch that still has ports is ``STATE``: its ports
        are NICs, removed with them.
        """
        _check_switch(name)

        def fn(d: Db, txn: Any) -> bool:
            row = _one_switch(d, name)
            if row is None:
                return False
            if network_uuid is not None and row.external_ids.get(KEY_NETWORK) != network_uuid:
                return False
            if row.ports:
                raise OvnError(
                    f"Logical switch {name} still has {len(row.ports)} port(s)", ECode.STATE
                )
            row.delete()
            return True

        return bool(self._run(f"Cannot delete logical switch {name}", fn))

    def switch_network(self, name: str) -> str | None:
        """The ``corral-network`` of switch ``name`` ("" if unowned), None if missing."""
        _check_switch(name)

        def fn(d: Db, txn: Any) -> str | None:
            row = _one_switch(d, name)
            return None if row is None else str(row.external_ids.get(KEY_NETWORK, ""))

        result = self._run(f"Cannot look up logical switch {name}", fn)
        return None if result is None else str(result)

    # --- logical switch ports ---

    def ensure_port(self, switch: str, spec: PortSpec) -> bool:
        """Create or update a NIC's port on ``switch``; True if created.

        Sets ``addresses``, ``external_ids:corral-instance`` (other keys stay)
        and, when ``spec.chassis`` is set, the steady state
        ``requested-chassis=<chassis>`` without ``activation-strategy`` (so
        this also settles a migration marking). A port on another switch (the
        NIC changed network) is moved. ``NOENT`` if ``switch`` is missing.
        """
        _check_switch(switch)
        _check_spec(spec)
        addresses = port_addresses(spec.mac, spec.ip)

        def fn(d: Db, txn: Any) -> bool:
            ls = _one_switch(d, switch)
            if ls is None:
                raise OvnError(f"Logical switch {switch} does not exist", ECode.NOENT)
            lsp = _port(d, spec.name)
            created = lsp is None
            if lsp is not None:
                holders = _switches_of(d, lsp)
                if ls not in holders:
                    for other in holders:
                        other.delvalue("ports", lsp)
                    ls.addvalue("ports", lsp)
            if lsp is None:
                lsp = txn.insert(d.idl.tables["Logical_Switch_Port"])
                lsp.name = spec.name
                lsp.addresses = addresses
                lsp.external_ids = {KEY_INSTANCE: spec.instance}
                if spec.chassis:
                    lsp.options = {OPT_CHASSIS: spec.chassis}
                ls.addvalue("ports", lsp)
                return True
            if list(lsp.addresses) != addresses:
                lsp.addresses = addresses
            if lsp.external_ids.get(KEY_INSTANCE) != spec.instance:
                lsp.setkey("external_ids", KEY_INSTANCE, spec.instance)
            if spec.chassis:
                _settle(lsp, spec.chassis)
            return created

        return bool(self._run(f"Cannot create logical switch port {spec.name}", fn))

    def delete_port(self, name: str) -> bool:
        """Delete the port ``name`` wherever it is; False if it was not there."""
        _check_uuid("name", name)

        def fn(d: Db, txn: Any) -> bool:
            lsp = _port(d, name)
            if lsp is None:
                return False
            for ls in _switches_of(d, lsp):
                ls.delvalue("ports", lsp)
            lsp.delete()
            return True

        return bool(self._run(f"Cannot delete logical switch port {name}", fn))

    def get_port(self, name: str) -> PortState | None:
        """The port ``name`` as NB has it, or ``None``."""
        _check_uuid("name", name)

        def fn(d: Db, txn: Any) -> PortState | None:
            lsp = _port(d, name)
            return None if lsp is None else _state(d, lsp)

        result = self._run(f"Cannot read logical switch port {name}", fn)
        return result if isinstance(result, PortState) else None

    def list_ports(self, external_ids: Mapping[str, str] | None = None) -> list[PortState]:
        """Every port whose ``external_ids`` contain all of ``external_ids``, by name.

        E.g. ``{"corral-instance": "inst1"}``; ``{"corral-instance": ""}``…
        is not a wildcard: use :meth:`ports_with_key` for "has the key".
        """
        wanted = dict(external_ids or {})

        def fn(d: Db, txn: Any) -> list[PortState]:
            owners = _owners(d)
            return [
                _state(d, lsp, owners)
                for lsp in d.idl.tables["Logical_Switch_Port"].rows.values()
                if all(lsp.external_ids.get(k) == v for k, v in wanted.items())
            ]

        result = self._run("Cannot list logical switch ports", fn)
        return sorted(result, key=lambda p: p.name)

    def ports_with_key(self, key: str) -> list[PortState]:
        """Every port that has ``external_ids:<key>`` (any value): Corral's ports."""

        def fn(d: Db, txn: Any) -> list[PortState]:
            owners = _owners(d)
            return [
                _state(d, lsp, owners)
                for lsp in d.idl.tables["Logical_Switch_Port"].rows.values()
                if key in lsp.external_ids
            ]

        return sorted(self._run("Cannot list logical switch ports", fn), key=lambda p: p.name)

    # --- live migration ---

    def begin_migration(self, name: str, src: str, dst: str) -> None:
        """Before the memory copy: ``requested-chassis=<src>,<dst>``, ``activation-strategy=rarp``.

        One transaction: ovn-northd never sees the second chassis without the
        strategy (which would let the destination claim the port at once:
        the fight the workflow exists to avoid). ``NOENT`` if the port is
        missing.
        """
        _check_uuid("name", name)
        _check_chassis("source", src)
        _check_chassis("target", dst)
        if src == dst:
            raise ParameterError("target", f"source and target are both {src}")

        def fn(d: Db, txn: Any) -> None:
            lsp = _require_port(d, name)
            value = f"{src},{dst}"
            if lsp.options.get(OPT_CHASSIS) != value:
                lsp.setkey("options", OPT_CHASSIS, value)
            if lsp.options.get(OPT_ACTIVATION) != ACTIVATION:
                lsp.setkey("options", OPT_ACTIVATION, ACTIVATION)

        self._run(f"Cannot mark port {name} for migration {src} -> {dst}", fn)

    def finish_migration(self, name: str, dst: str) -> None:
        """After success: ``requested-chassis=<dst>``, ``activation-strategy`` removed."""
        self._settle(name, dst, f"Cannot bind port {name} to {dst} after migration")

    def revert_migration(self, name: str, src: str) -> None:
        """After a failed or aborted migration: back to ``requested-chassis=<src>``."""
        self._settle(name, src, f"Cannot bind port {name} back to {src}")

    def _settle(self, name: str, chassis: str, what: str) -> None:
        _check_uuid("name", name)
        _check_chassis("chassis", chassis)

        def fn(d: Db, txn: Any) -> None:
            _settle(_require_port(d, name), chassis)

        self._run(what, fn)


# --- helpers running inside a transaction ---------------------------------------------


def _one_switch(d: Db, name: str) -> Any | None:
    # Logical_Switch names are not an index in the NB schema: two may share one.
    rows = [r for r in d.idl.tables["Logical_Switch"].rows.values() if r.name == name]
    if len(rows) > 1:
        raise OvnError(
            f"{len(rows)} logical switches are named {name} (rename or delete all but one)",
            ECode.NOTUNIQUE,
        )
    return rows[0] if rows else None


def _port(d: Db, name: str) -> Any | None:
    for row in d.idl.tables["Logical_Switch_Port"].rows.values():
        if row.name == name:
            return row
    return None


def _require_port(d: Db, name: str) -> Any:
    lsp = _port(d, name)
    if lsp is None:
        raise OvnError(f"Logical switch port {name} does not exist", ECode.NOENT)
    return lsp


def _switches_of(d: Db, lsp: Any) -> list[Any]:
    return [ls for ls in d.idl.tables["Logical_Switch"].rows.values() if lsp in ls.ports]


def _settle(lsp: Any, chassis: str) -> None:
    if lsp.options.get(OPT_CHASSIS) != chassis:
        lsp.setkey("options", OPT_CHASSIS, chassis)
    if OPT_ACTIVATION in lsp.options:
        lsp.delkey("options", OPT_ACTIVATION)


def _owners(d: Db) -> dict[Any, str]:
    """Port row UUID → name of the switch holding it (one pass over the switches)."""
    return {
        lsp.uuid: str(ls.name)
        for ls in d.idl.tables["Logical_Switch"].rows.values()
        for lsp in ls.ports
    }


def _state(d: Db, lsp: Any, owners: Mapping[Any, str] | None = None) -> PortState:
    if owners is None:
        switches = _switches_of(d, lsp)
        switch = str(switches[0].name) if switches else None
    else:
        switch = owners.get(lsp.uuid)
    options = dict(lsp.options)
    up = list(lsp.up)
    return PortState(
        name=str(lsp.name),
        switch=switch,
        addresses=tuple(lsp.addresses),
        requested_chassis=_split(options.get(OPT_CHASSIS)),
        activation_strategy=_split(options.get(OPT_ACTIVATION)),
        external_ids=dict(lsp.external_ids),
        options=options,
        up=bool(up[0]) if up else None,
    )
