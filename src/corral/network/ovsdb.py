"""OVSDB plumbing shared by Corral's OVSDB clients (node OVS, OVN NB and SB).

Layer: driver (imports ``corral.errors``; ``ovsdbapp``/``ovs`` lazily, so
importing this module costs nothing). :func:`open_db` gives one ovsdbapp IDL
connection per remote, schema and table set, cached for the life of the
process: an IDL connection is costly (schema fetch, a dump of the registered
tables, a thread), so ``noded``/``masterd`` pay it once. A connection that
dropped is replaced on the next call, and a transaction that fails because
its connection dropped is retried once on a fresh one (every operation built
on :func:`transact` is idempotent). The first connect fails fast and
clearly: a missing ``unix:`` socket is reported without waiting, and the
schema fetch has a deadline (ovsdbapp's own fetch blocks without one). The
remote is named in every error.

:func:`transact` runs a function inside one OVSDB transaction (through
:class:`Call`, an ovsdbapp command): reads and writes of one operation are
atomic, which ovsdbapp's stock one-step commands are not. Calls block (a
queue hand-off to the connection's thread and one round trip); async
callers run them in a thread.
"""

from __future__ import annotations

import errno
import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from corral.errors import CorralError, ECode, HypervisorError

CONNECT_TIMEOUT = 5.0  # first connect: schema fetch + table dump
TXN_TIMEOUT = 10.0  # one transaction
_SCHEMES = ("unix", "tcp", "ssl")

ErrorClass = Callable[[str, ECode], CorralError]


def normalize_remote(remote: str, error: ErrorClass = HypervisorError) -> str:
    """``remote`` as ovsdb-server takes it: a bare absolute path becomes ``unix:PATH``.

    Several remotes (a clustered database) are comma-separated, as in
    ``ovn-nbctl --db``. Raises ``INVAL`` for anything that is not
    ``unix:``/``tcp:``/``ssl:``.
    """
    remote = remote.strip()
    if remote.startswith("/"):
        return f"unix:{remote}"
    parts = [p.strip() for p in remote.split(",")]
    for part in parts:
        scheme, _, rest = part.partition(":")
        if scheme not in _SCHEMES or not rest:
            raise error(
                f"Invalid OVSDB remote {remote!r}: expected unix:PATH, tcp:IP:PORT or "
                "ssl:IP:PORT (comma-separated for a clustered database)",
                ECode.INVAL,
            )
    return ",".join(parts)


class _Api:
    """An ovsdbapp backend bound to one connection.

    ovsdbapp's ``Backend`` keeps its connection in a *class* attribute (one
    database per process and class); here every remote has its own, so the
    property is overridden per instance.
    """

    backend: Any = None

    @classmethod
    def make(cls, conn: Any, schema: str) -> Any:
        from ovsdbapp import api  # type: ignore[import-untyped,unused-ignore]
        from ovsdbapp.backend import ovs_idl  # type: ignore[import-untyped,unused-ignore]
        from ovsdbapp.backend.ovs_idl import (  # type: ignore[import-untyped,unused-ignore]
            idlutils,
        )

        if cls.backend is None:

            class Backend(ovs_idl.Backend, api.API):  # type: ignore[misc]
                # Records by name (db_set("Interface", "tap0", …)); tables
                # not listed are looked up by their schema index.
                lookup_table = idlutils._LOOKUP_TABLE

                def __init__(self, conn: Any, schema: str) -> None:
                    api.API.__init__(self)  # not Backend's: it would start the connection
                    self._conn = conn
                    self.schema = schema

                @property
                def ovsdb_connection(self) -> Any:
                    return self._conn

            cls.backend = Backend
        return cls.backend(conn, schema)


@dataclass
class Db:
    """One cached OVSDB connection (ovsdbapp ``Connection`` + backend)."""

    remote: str
    schema: str
    conn: Any
    api: Any

    @property
    def idl(self) -> Any:
        return self.conn.idl

    def alive(self) -> bool:
        thread = self.conn.thread
        return bool(
            thread is not None and thread.is_alive() and self.conn.idl._session.is_connected()
        )

    def close(self) -> None:
        try:
            self.conn.stop(timeout=1)
        except Exception:  # a dead connection may fail to stop: nothing to keep
            pass


_CACHE: dict[tuple[str, str, tuple[str, ...]], Db] = {}
_CACHE_LOCK = threading.Lock()


def unix_paths(remote: str) -> list[str]:
    return [p.split(":", 1)[1] for p in remote.split(",") if p.startswith("unix:")]


def _fetch_schema(remote: str, schema: str, timeout: float) -> dict[str, Any]:
    """``get_schema`` from the first remote that answers, within ``timeout``.

    Raises ``OSError``/``TimeoutError`` (connection) or ``LookupError`` (the
    server does not hold ``schema``).
    """
    import ovs.jsonrpc  # type: ignore[import-untyped,unused-ignore]
    import ovs.poller  # type: ignore[import-untyped,unused-ignore]
    import ovs.stream  # type: ignore[import-untyped,unused-ignore]
    import ovs.timeval  # type: ignore[import-untyped,unused-ignore]

    deadline = ovs.timeval.msec() + int(timeout * 1000)
    last: Exception = OSError(errno.ECONNREFUSED, "no remote")
    for one in remote.split(","):
        left = deadline - ovs.timeval.msec()
        if left <= 0:
            break
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(one), left)
        if err:
            last = OSError(err, os.strerror(err))
            continue
        rpc = ovs.jsonrpc.Connection(stream)
        try:
            request = ovs.jsonrpc.Message.create_request("get_schema", [schema])
            err = rpc.send(request)
            reply = None
            while not err:
                err, msg = rpc.recv()
                if err == errno.EAGAIN:
                    if ovs.timeval.msec() >= deadline:
                        err = errno.ETIMEDOUT
                        break
                    rpc.run()
                    poller = ovs.poller.Poller()
                    rpc.wait(poller)
                    rpc.recv_wait(poller)
                    poller.timer_wait_until(deadline)
                    poller.block()
                    err = 0
                    continue
                if msg is not None and msg.id == request.id:
                    reply = msg
                    break
        finally:
            rpc.close()
        if err:
            last = (
                TimeoutError(f"no answer within {timeout:g}s")
                if err == errno.ETIMEDOUT
                else OSError(err, os.strerror(err))
            )
            continue
        assert reply is not None
        if reply.type == ovs.jsonrpc.Message.T_ERROR:
            raise LookupError(f"the server has no database {schema} ({reply.error})")
        return dict(reply.result)
    raise last


def connect_db(
    remote: str,
    schema: str,
    tables: Sequence[str],
    timeout: float,
    error: ErrorClass,
    idl_class: Any = None,
) -> Db:
    """A new, uncached connection (:func:`open_db` caches these).

    ``idl_class`` replaces ovsdbapp's ``OvsdbIdl`` (e.g. to receive row
    notifications). ``remote`` must be normalized.
    """
    paths = unix_paths(remote)
    if paths and len(paths) == len(remote.split(",")) and not any(map(os.path.exists, paths)):
        raise error(
            f"Cannot connect to OVSDB at {remote}: {paths[0]} does not exist "
            "(is ovsdb-server running?)",
            ECode.ENVIRON,
        )
    try:
        schema_json = _fetch_schema(remote, schema, timeout)
    except LookupError as e:
        raise error(f"Cannot use OVSDB at {remote}: {e}", ECode.ENVIRON) from None
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.EPROTO:  # what the jsonrpc layer says of a non-OVSDB peer
            reason = "the peer does not speak OVSDB (protocol error)"
        raise error(f"Cannot connect to OVSDB at {remote}: {reason}", ECode.ENVIRON) from None
    from ovs.db import idl as ovs_idl  # type: ignore[import-untyped,unused-ignore]
    from ovsdbapp.backend.ovs_idl import (  # type: ignore[import-untyped,unused-ignore]
        connection,
    )

    helper = ovs_idl.SchemaHelper(None, schema_json)
    for table in tables:
        helper.register_table(table)
    idl = (idl_class or connection.OvsdbIdl)(remote, helper)
    conn = connection.Connection(idl, timeout)
    api = _Api.make(conn, schema)
    api.autocreate_indices()
    try:
        conn.start()
    except Exception as e:
        try:
            idl.close()
        except Exception:
            pass
        raise error(
            f"Cannot connect to OVSDB at {remote}: no database dump within {timeout:g}s ({e})",
            ECode.ENVIRON,
        ) from None
    conn.timeout = TXN_TIMEOUT
    return Db(remote, schema, conn, api)


def open_db(
    remote: str,
    schema: str,
    tables: Sequence[str],
    *,
    error: ErrorClass = HypervisorError,
    timeout: float = CONNECT_TIMEOUT,
    fresh: bool = False,
) -> Db:
    """The process-wide connection to ``schema`` at ``remote`` (made on first use).

    Only ``tables`` are replicated. ``fresh`` replaces a cached connection.
    Errors: ``error(..., ECode.ENVIRON)`` naming the remote when the server
    cannot be reached or has no such database, ``INVAL`` for a bad remote.
    """
    remote = normalize_remote(remote, error)
    key = (remote, schema, tuple(sorted(tables)))
    with _CACHE_LOCK:
        db = _CACHE.get(key)
        if db is not None and (fresh or not db.alive()):
            del _CACHE[key]
            db.close()
            db = None
        if db is None:
            db = connect_db(remote, schema, tables, timeout, error)
            _CACHE[key] = db
        return db


def close_all() -> None:
    """Close every cached connection (tests; a daemon shutting down)."""
    with _CACHE_LOCK:
        dbs = list(_CACHE.values())
        _CACHE.clear()
    for db in dbs:
        db.close()


class Call:
    """An ovsdbapp command running ``fn(txn)`` inside the transaction.

    ``fn`` runs in the connection's thread with the IDL locked: it reads rows,
    changes them through the IDL (``txn.insert``, ``row.setkey`` …) and
    returns plain values (never IDL rows, which change under the caller).
    Raising aborts the whole transaction. Commands built here keep every
    operation's reads and writes in one transaction, which ovsdbapp's stock
    commands (one step each) do not.
    """

    cls: Any = None

    @classmethod
    def make(cls, api: Any, fn: Callable[[Any], Any]) -> Any:
        if cls.cls is None:
            from ovsdbapp.backend.ovs_idl import command

            class _Call(command.BaseCommand):  # type: ignore[misc]
                def __init__(self, api: Any, fn: Callable[[Any], Any]) -> None:
                    super().__init__(api)
                    self.fn = fn

                def run_idl(self, txn: Any) -> None:
                    self.result = self.fn(txn)

            cls.cls = _Call
        return cls.cls(api, fn)


def _translate(db: Db, what: str, e: Exception, error: ErrorClass) -> CorralError:
    from ovsdbapp import exceptions as ovsdbapp_exc  # type: ignore[import-untyped,unused-ignore]

    if isinstance(e, ovsdbapp_exc.TimeoutException) or "timed out" in str(e):
        return error(
            f"{what}: no answer from OVSDB at {db.remote} within {db.conn.timeout:g}s",
            ECode.ENVIRON,
        )
    return error(f"{what}: OVSDB at {db.remote}: {e}", ECode.ENVIRON)


def transact(
    connect: Callable[[bool], Db],
    what: str,
    fn: Callable[[Any, Any], Any],
    *,
    error: ErrorClass = HypervisorError,
) -> Any:
    """Run ``fn(db, txn)`` as one OVSDB transaction; return what it returned.

    ``connect(fresh)`` gives the connection (:func:`open_db`); a transaction
    that failed because its connection dropped is retried once on a fresh
    one. A :class:`CorralError` raised by ``fn`` passes through unchanged;
    other failures become ``error(f"{what}: …", ENVIRON)`` naming the remote.
    """
    for attempt in (0, 1):
        db = connect(attempt > 0)
        txn = db.api.create_transaction(check_error=True, log_errors=False)
        cmd = txn.add(Call.make(db.api, functools.partial(fn, db)))
        try:
            txn.commit()
        except CorralError:
            raise
        except Exception as e:
            if attempt == 0 and not db.alive():
                continue  # the connection dropped under us: once more, reconnected
            raise _translate(db, what, e, error) from None
        return cmd.result
    raise AssertionError("unreachable")
