"""One error tree for all of Corral, with Ganeti's error codes.

Layer: bottom (imports only the standard library). Every module raises from
this tree; drivers translate foreign exceptions with ``raise ... from``.

    CorralError                    code, message (+ structured fields)
     ├── ProgrammerError           a bug: should never reach a user
     ├── OpPrereqError             request refused before anything changed
     │    └── ParameterError       a named field/parameter is invalid
     ├── OpExecError               execution failed (state may need repair)
     │    └── HooksAbort           a pre-hook failed; carries hook output
     ├── ConfigError               config.data unreadable, corrupt, too new
     ├── JobError                  job queue errors (unknown job, bad state)
     │    └── JobCanceled          raised inside a job that was canceled
     ├── LockError                 lock acquisition aborted
     ├── ProtocolError             malformed request on a wire (LUXI, RPC)
     ├── RpcError                  a node call failed (node, call, reason)
     ├── HypervisorError           a hypervisor driver failed
     ├── DaemonError               cannot reach or start a daemon
     ├── PkiError                  certificates, keys, CRL, TLS contexts
     └── VClusterError             the virtual cluster (defined in vcluster.model)

Each error has an :class:`ECode`, which maps to a CLI exit status and an HTTP
status; the same codes Ganeti uses (``wrong_input``, ``unknown_entity``, …)
travel on the wire, so RAPI clients written for Ganeti understand them.
"""

from __future__ import annotations

import enum

# Not ``typing.TYPE_CHECKING``: importing typing costs every gnt-* command ~4 ms
# (mypy honours any module-level TYPE_CHECKING flag).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ECode(enum.Enum):
    """Ganeti's error codes (``ECODE_*``), values as on Ganeti's wire."""

    RESOLVER = "resolver_error"
    NORES = "insufficient_resources"
    TEMP_NORES = "temp_insufficient_resources"
    INVAL = "wrong_input"
    STATE = "wrong_state"
    NOENT = "unknown_entity"
    EXISTS = "already_exists"
    NOTUNIQUE = "resource_not_unique"
    FAULT = "internal_error"
    ENVIRON = "environment_error"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_EXIT_CODES: dict[ECode, int] = {
    ECode.INVAL: 2,
    ECode.NOENT: 3,
    ECode.EXISTS: 4,
    ECode.STATE: 5,
    ECode.NORES: 6,
    ECode.TEMP_NORES: 7,
    ECode.NOTUNIQUE: 8,
    ECode.ENVIRON: 9,
    ECode.RESOLVER: 10,
    ECode.FAULT: 11,
}

_HTTP_STATUS: dict[ECode, int] = {
    ECode.INVAL: 400,
    ECode.NOENT: 404,
    ECode.EXISTS: 409,
    ECode.NOTUNIQUE: 409,
    ECode.STATE: 409,
    ECode.NORES: 409,
    ECode.TEMP_NORES: 503,
    ECode.RESOLVER: 502,
    ECode.ENVIRON: 500,
    ECode.FAULT: 500,
}


class CorralError(Exception):
    """Base of every error Corral raises on purpose."""

    default_code = ECode.FAULT

    def __init__(self, message: str, code: ECode | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields = fields

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, Any]:
        """Encode for a reply on any of Corral's wires."""
        return {
            "class": type(self).__name__,
            "code": self.code.value,
            "message": self.message,
            "fields": self.fields,
        }


class ProgrammerError(CorralError):
    default_code = ECode.FAULT


class OpPrereqError(CorralError):
    """The request was refused before anything was changed."""

    default_code = ECode.INVAL


class ParameterError(OpPrereqError):
    """A named field or parameter is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str, code: ECode | None = None) -> None:
        super().__init__(f"{field}: {message}", code or ECode.INVAL, field=field)
        self.field = field


class OpExecError(CorralError):
    default_code = ECode.FAULT


class HooksAbort(OpExecError):
    """A pre-hook failed; the operation did not run."""

    default_code = ECode.STATE


class ConfigError(CorralError):
    default_code = ECode.ENVIRON


class JobError(CorralError):
    default_code = ECode.INVAL


class JobCanceled(JobError):
    default_code = ECode.STATE


class LockError(CorralError):
    default_code = ECode.TEMP_NORES


class ProtocolError(CorralError):
    default_code = ECode.INVAL


class RpcError(CorralError):
    default_code = ECode.ENVIRON


class HypervisorError(CorralError):
    default_code = ECode.ENVIRON


class HotplugError(HypervisorError):
    """A device cannot be plugged/unplugged live (qemu.qmp-style: says which and why)."""

    default_code = ECode.STATE


class DaemonError(CorralError):
    default_code = ECode.ENVIRON


class PkiError(CorralError):
    """A certificate, key or CRL is missing, invalid or does not fit the cluster."""

    default_code = ECode.ENVIRON


_CLASSES: dict[str, type[CorralError]] = {
    cls.__name__: cls
    for cls in (
        CorralError,
        ProgrammerError,
        OpPrereqError,
        ParameterError,
        OpExecError,
        HooksAbort,
        ConfigError,
        JobError,
        JobCanceled,
        LockError,
        ProtocolError,
        RpcError,
        HypervisorError,
        DaemonError,
        PkiError,
    )
}


def from_wire(data: Any) -> CorralError:
    """Rebuild an error encoded by :meth:`CorralError.to_wire`.

    Anything malformed becomes a plain :class:`CorralError` carrying the raw
    text, so a garbled reply never raises something else on decode.
    """
    if not isinstance(data, dict):
        return CorralError(f"remote error: {data!r}")
    cls = _CLASSES.get(str(data.get("class")), CorralError)
    try:
        code = ECode(data.get("code"))
    except ValueError:
        code = ECode.FAULT
    message = str(data.get("message", "unknown error"))
    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    err = CorralError.__new__(cls)
    CorralError.__init__(err, message, code, **(fields or {}))
    if isinstance(err, ParameterError):
        err.field = str((fields or {}).get("field", ""))
    return err
