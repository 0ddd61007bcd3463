"""Parameters: each declared once, with type, default, doc and check.

Layer: bottom (imports ``errors``, ``units`` and ``msgspec``). A parameter group is a
frozen msgspec struct: the annotation is the type, the field default is the
default, ``Meta(description=…)`` is the doc and the ``Meta`` constraints plus
an optional ``extra={"check": fn}`` are the check. From that one declaration
we derive CLI parsing (``-B memory=512M``), validation of overrides, the
filled typed record an LU reads, and the documentation table.

Overrides are stored in the config as plain ``{name: value}`` maps (Ganeti's
layout, so existing tools can read ``config.data``) and always pass through a
group before they are stored or used. Inheritance is cluster → node group →
instance (:meth:`ParamGroup.fill`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
import msgspec.inspect as mi

from corral.errors import ECode, ParameterError
from corral.units import MAX_SIZE_MIB as MAX_SIZE_MIB  # re-exported
from corral.units import parse_size as parse_size  # re-exported

T = TypeVar("T", bound=msgspec.Struct)

_TRUE = {"yes", "true", "on", "1", "y"}
_FALSE = {"no", "false", "off", "0", "n"}


def parse_bool(text: str, field: str) -> bool:
    low = str(text).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ParameterError(field, f"invalid boolean {text!r} (use yes/no)")


@dataclass(frozen=True)
class Param:
    """One declared parameter, derived from a struct field."""

    name: str
    type: Any  # a msgspec.inspect type
    default: Any
    doc: str
    unit: str | None
    check: Callable[[Any], str | None] | None

    @property
    def type_name(self) -> str:
        return _type_name(self.type, self.unit)

    def from_text(self, text: str, field: str) -> Any:
        """Convert a CLI string to this parameter's type and check it."""
        return self.check_value(_from_text(self.type, self.unit, text, field), field)

    def check_value(self, value: Any, field: str) -> Any:
        if isinstance(value, str) and not _is_textual(self.type):
            # Values from the CLI or RAPI arrive as text (Ganeti's ForceDictType).
            value = _from_text(self.type, self.unit, value, field)
        try:
            value = msgspec.convert(value, type=self.annotation())
        except msgspec.ValidationError as err:
            msg = str(err).replace(" - at `$`", "")
            raise ParameterError(field, msg) from None
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ParameterError(field, problem)
        return value

    def annotation(self) -> Any:
        return _annotation(self.type)


def _unwrap(t: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    if isinstance(t, mi.Metadata):
        return t.type, dict(t.extra_json_schema or {}), dict(t.extra or {})
    return t, {}, {}


def _meta(**constraints: Any) -> msgspec.Meta:
    kw: dict[str, Any] = {k: v for k, v in constraints.items() if v is not None}
    return msgspec.Meta(**kw)


def _annotation(t: Any) -> Any:
    """Rebuild a Python annotation (with constraints) from a msgspec type."""
    if isinstance(t, mi.IntType):
        return Annotated[int, _meta(ge=t.ge, le=t.le, gt=t.gt, lt=t.lt)]
    if isinstance(t, mi.FloatType):
        return Annotated[float, _meta(ge=t.ge, le=t.le, gt=t.gt, lt=t.lt)]
    if isinstance(t, mi.StrType):
        return Annotated[str, _meta(pattern=t.pattern, max_length=t.max_length)]
    if isinstance(t, mi.BoolType):
        return bool
    if isinstance(t, mi.NoneType):
        return None
    if isinstance(t, mi.LiteralType):
        return Literal[t.values]
    if isinstance(t, mi.UnionType):
        args = tuple(_annotation(x) for x in t.types)
        out = args[0]
        for a in args[1:]:
            out = out | a if a is not None else out | None
        return out
    if isinstance(t, mi.ListType):
        return list[_annotation(t.item_type)]  # type: ignore[misc]
    return Any


def _is_textual(t: Any) -> bool:
    if isinstance(t, mi.StrType):
        return True
    if isinstance(t, mi.LiteralType):
        return all(isinstance(v, str) for v in t.values)
    if isinstance(t, mi.UnionType):
        return any(_is_textual(x) for x in t.types)
    return False


def _type_name(t: Any, unit: str | None) -> str:
    if isinstance(t, mi.IntType):
        return f"size ({unit})" if unit == "MiB" else "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.LiteralType):
        return "one of " + "|".join(str(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        return " or ".join(_type_name(x, unit) for x in t.types if not isinstance(x, mi.NoneType))
    if isinstance(t, mi.ListType):
        return "list of " + _type_name(t.item_type, unit)
    return "value"


def _from_text(t: Any, unit: str | None, text: str, field: str) -> Any:
    if isinstance(t, mi.UnionType):
        if any(isinstance(x, mi.NoneType) for x in t.types) and text.lower() in ("", "none"):
            return None
        for x in t.types:
            if isinstance(x, mi.NoneType):
                continue
            try:
                return _from_text(x, unit, text, field)
            except ParameterError:
                continue
        raise ParameterError(field, f"invalid value {text!r}")
    if isinstance(t, mi.IntType):
        if unit == "MiB":
            return parse_size(text, field)
        try:
            return int(text, 10)
        except ValueError:
            raise ParameterError(field, f"invalid integer {text!r}") from None
    if isinstance(t, mi.FloatType):
        try:
            return float(text)
        except ValueError:
            raise ParameterError(field, f"invalid number {text!r}") from None
    if isinstance(t, mi.BoolType):
        return parse_bool(text, field)
    if isinstance(t, mi.LiteralType):
        for v in t.values:
            if str(v) == text:
                return v
        raise ParameterError(
            field, f"invalid value {text!r}, expected one of: {', '.join(map(str, t.values))}"
        )
    if isinstance(t, mi.ListType):
        return [_from_text(t.item_type, unit, part, field) for part in text.split(":") if part]
    return text


class ParamGroup(Generic[T]):
    """The parameters of one kind (``be``, ``nic``, ``hv/kvm`` …)."""

    def __init__(self, kind: str, struct: type[T], aliases: Mapping[str, tuple[str, ...]] = {}):
        self.kind = kind
        self.struct = struct
        self.aliases = dict(aliases)
        self.params: dict[str, Param] = {}
        info = mi.type_info(struct)
        assert isinstance(info, mi.StructType)
        for f in info.fields:
            t, schema, extra = _unwrap(f.type)
            self.params[f.name] = Param(
                name=f.name,
                type=t,
                default=f.default,
                doc=str(schema.get("description", "")),
                unit=extra.get("unit"),
                check=extra.get("check"),
            )

    def names(self) -> list[str]:
        return list(self.params)

    def _param(self, name: str, field: str) -> Param:
        try:
            return self.params[name]
        except KeyError:
            raise ParameterError(
                f"{field}/{name}" if field else name,
                f"unknown {self.kind} parameter {name!r}; known: {', '.join(sorted(self.params))}",
            ) from None

    def parse_text(self, raw: Mapping[str, str], field: str) -> dict[str, Any]:
        """Parse ``name=value`` strings from the CLI into typed overrides.

        The value ``default`` (Ganeti's ``VALUE_DEFAULT``) is kept as ``None``
        meaning "remove the override".
        """
        out: dict[str, Any] = {}
        for name, text in raw.items():
            targets = self.aliases.get(name, (name,))
            for target in targets:
                p = self._param(target, field)
                if text == "default":
                    out[target] = None
                else:
                    out[target] = p.from_text(text, f"{field}/{name}")
        return out

    def check_overrides(self, overrides: Mapping[str, Any], field: str) -> dict[str, Any]:
        """Type-check stored/requested overrides; unknown names are errors."""
        if not isinstance(overrides, Mapping):
            raise ParameterError(field, f"expected a mapping of {self.kind} parameters")
        out: dict[str, Any] = {}
        for name, value in overrides.items():
            for target in self.aliases.get(name, (name,)):
                p = self._param(target, field)
                if value is None or value == "default":
                    out[target] = None
                else:
                    out[target] = p.check_value(value, f"{field}/{name}")
        return out

    def defaults(self) -> dict[str, Any]:
        return {n: p.default for n, p in self.params.items()}

    def fill(self, *layers: Mapping[str, Any] | None) -> T:
        """Merge defaults and the override layers (later wins) into a typed record."""
        merged = self.defaults()
        for layer in layers:
            if layer:
                merged.update((k, v) for k, v in layer.items() if v is not None)
        try:
            return msgspec.convert(merged, type=self.struct)
        except msgspec.ValidationError as err:
            raise ParameterError(self.kind, str(err), ECode.INVAL) from None

    def fill_dict(self, *layers: Mapping[str, Any] | None) -> dict[str, Any]:
        return msgspec.structs.asdict(self.fill(*layers))


def apply_overrides(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply parsed changes to stored overrides; ``None`` removes an override."""
    out = dict(current)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# --- the declarations --------------------------------------------------------

_VLAN_RE = r"^(\.?\d{1,4})?(:\d{1,4})*$"


class BeParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Backend parameters: what the instance gets from its node."""

    maxmem: Annotated[
        int,
        msgspec.Meta(
            ge=1, le=4 * 1024 * 1024, description="Maximum memory (MiB)", extra={"unit": "MiB"}
        ),
    ] = 128
    minmem: Annotated[
        int,
        msgspec.Meta(
            ge=1, le=4 * 1024 * 1024, description="Minimum memory (MiB)", extra={"unit": "MiB"}
        ),
    ] = 128
    vcpus: Annotated[int, msgspec.Meta(ge=1, le=1024, description="Number of virtual CPUs")] = 1
    auto_balance: Annotated[
        bool, msgspec.Meta(description="Consider the instance when balancing the cluster")
    ] = True
    always_failover: Annotated[
        bool, msgspec.Meta(description="Fail over instead of live-migrating")
    ] = False
    spindle_use: Annotated[
        int, msgspec.Meta(ge=0, le=1024, description="Spindles used by the instance")
    ] = 1


BE = ParamGroup("be", BeParams, aliases={"memory": ("maxmem", "minmem")})


class NicParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a NIC attaches to the node's network."""

    mode: Annotated[
        Literal["bridged", "routed", "openvswitch", "ovn"],
        msgspec.Meta(description="NIC mode: bridged, routed, openvswitch or ovn"),
    ] = "bridged"
    link: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[A-Za-z0-9_.:-]{0,64}$",
            description="Bridge (bridged), routing table (routed) or switch",
        ),
    ] = "br0"
    vlan: Annotated[
        str,
        msgspec.Meta(
            pattern=_VLAN_RE, description="VLAN: '.10' untagged, ':20:30' tagged, '.10:20' both"
        ),
    ] = ""


NIC = ParamGroup("nic", NicParams)


class FileDiskParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Disk parameters of the file-backed templates."""

    preallocate: Annotated[
        bool, msgspec.Meta(description="Allocate image files fully instead of sparse")
    ] = False


class NoDiskParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Templates without parameters."""


DISK: dict[str, ParamGroup[Any]] = {
    "diskless": ParamGroup("disk/diskless", NoDiskParams),
    "file": ParamGroup("disk/file", FileDiskParams),
    "sharedfile": ParamGroup("disk/sharedfile", FileDiskParams),
}
DISK_TEMPLATES = tuple(DISK)


def disk_group(template: str, field: str = "disk_template") -> ParamGroup[Any]:
    try:
        return DISK[template]
    except KeyError:
        raise ParameterError(
            field, f"unknown disk template {template!r}; known: {', '.join(DISK)}"
        ) from None
