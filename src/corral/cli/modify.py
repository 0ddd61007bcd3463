"""``gnt-instance modify`` and ``gnt-instance grow-disk``, Ganeti's syntax.

Layer: CLI. ``modify`` turns ``--net``/``--disk`` texts into the opcode's
``(action, identifier, params)`` triples::

    --net add[:k=v,…]        append a NIC              ("add", -1, {…})
    --net N:add[,k=v,…]      insert a NIC at index N   ("add", N, {…})
    --net [ID:]remove        remove a NIC (the last)   ("remove", ID, {})
    --net ID:modify,k=v,…    change a NIC              ("modify", ID, {…})
    --net ID:modify          plug a NIC as configured  ("modify", ID, {})
    --net ID:k=v,…           the same (Ganeti's legacy form)

and the same for ``--disk``. ``ID`` is an index (an ``int`` in the opcode),
a name or a UUID (strings, resolved by the master). Removals, and MAC
changes (done by unplugging the NIC and plugging a new one), ask first
unless ``-f``: the guest loses the device at once if it is running.
Parameter *values* are checked by the master; only keys are checked here,
so a typo is reported before anything is asked or submitted.
"""

from __future__ import annotations

import argparse
import re

from corral.cli.common import (
    DISK_KEYS,
    EXIT_FAILURE,
    EXIT_SUCCESS,
    NIC_KEYS,
    UsageError,
    add_submit_options,
    confirm,
    op_common,
    parse_ident_keyval,
    parse_keyval,
    parse_size_text,
    submit_or_wait,
)
from corral.client import Client
from corral.errors import ECode, ParameterError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any, Literal

    DeviceKind = Literal["nic", "disk"]
    Action = Literal["add", "remove", "modify"]
Ident = int | str

# Added devices take the keys ``gnt-instance add`` accepts.
# Size and spindles of an existing disk change through grow-disk, not modify.
DISK_MODIFY_KEYS = frozenset({"mode", "name"})

_KEYS: dict[tuple[DeviceKind, Action], frozenset[str]] = {
    ("nic", "add"): NIC_KEYS,
    ("nic", "modify"): NIC_KEYS,
    ("disk", "add"): DISK_KEYS,
    ("disk", "modify"): DISK_MODIFY_KEYS,
}
_ACTIONS: tuple[Action, ...] = ("add", "remove", "modify")
_INT_RE = re.compile(r"-?[0-9]+")
_FORMS = "expected add[:k=v,…], N:add[,k=v,…], ID:remove or ID:modify,k=v,…"

NOT_LIVE_NOTE = (
    "Please don't forget that most parameters take effect only at the next (re)start "
    "of the instance initiated by ganeti; restarting from within the instance will "
    "not be enough."
)


class DeviceChange:
    """One parsed ``--net``/``--disk`` value: the device kind and the opcode's triple.

    A plain class: a NamedTuple needs typing, a dataclass dataclasses (and
    inspect), milliseconds of every hotplug command's start."""

    __slots__ = ("action", "ident", "kind", "params")

    def __init__(
        self, kind: DeviceKind, action: Action, ident: Ident, params: dict[str, Any]
    ) -> None:
        self.kind = kind
        self.action = action
        self.ident = ident
        self.params = params

    def to_op(self) -> list[Any]:
        return [self.action, self.ident, dict(self.params)]

    def describe(self) -> str:
        if self.ident == -1:
            return f"the last {self.kind}"
        if isinstance(self.ident, int):
            return f"{self.kind} {self.ident}"
        return f"{self.kind} '{self.ident}'"


# --- parsing (pure) ------------------------------------------------------------------------


def _ident(text: str, option: str, orig: str) -> Ident:
    if _INT_RE.fullmatch(text):
        idx = int(text)
        if idx < -1:
            raise ParameterError(option, f"invalid index {idx} in {orig!r} (use N >= 0 or -1)")
        return idx
    if "," in text:
        raise ParameterError(option, f"missing ':' after the identifier in {orig!r} ({_FORMS})")
    return text


def parse_device_change(kind: DeviceKind, text: str) -> DeviceChange:
    """One ``--net``/``--disk`` value → a :class:`DeviceChange` (Ganeti's rules)."""
    option = "--net" if kind == "nic" else "--disk"
    first = text.partition(":")[0].partition(",")[0]
    if "=" in first:
        # ``--net mac=aa:bb:…``: the identifier was forgotten, the MAC holds the ':'.
        raise ParameterError(option, f"missing identifier in {text!r} ({_FORMS})")
    head, kv = parse_ident_keyval(text, option)
    flags = [a for a in _ACTIONS if a in kv]
    for a in flags:
        if kv.pop(a) != "yes":
            raise ParameterError(option, f"'{a}' takes no value in {text!r}")
    action: Action
    ident: Ident
    if head in ("add", "remove"):
        # Ganeti's short forms: ``add:…`` appends, ``remove`` drops the last one.
        if flags:
            raise ParameterError(option, f"{head!r} combined with {flags[0]!r} in {text!r}")
        action, ident = ("add" if head == "add" else "remove"), -1
    elif head == "modify":
        raise ParameterError(option, f"modify needs an identifier (ID:modify,k=v,…) in {text!r}")
    else:
        if len(flags) > 1:
            raise ParameterError(
                option, f"only one of add, remove, modify may be given in {text!r}"
            )
        action = flags[0] if flags else "modify"
        ident = _ident(head, option, text)
        if action == "add" and not isinstance(ident, int):
            raise ParameterError(
                option, f"add needs an index (N:add,…) or nothing (add:…), not {head!r}"
            )
    if action == "remove":
        if kv:
            raise ParameterError(option, f"remove takes no parameters, got {', '.join(kv)}")
        return DeviceChange(kind, action, ident, {})
    known = _KEYS[(kind, action)]
    unknown = sorted(set(kv) - known)
    if unknown:
        raise ParameterError(
            option,
            f"unknown {kind} parameter(s) for {action}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})",
        )
    # A modify without parameters re-applies the device as configured: it plugs a
    # NIC or disk that is not plugged (the repair ``gnt-cluster verify`` advises)
    # and leaves a plugged one alone.
    params: dict[str, Any] = dict(kv)
    if kind == "disk" and action == "add":
        if "size" not in kv:
            raise ParameterError(option, f"missing size in {text!r} (e.g. add:size=10G)")
        params["size"] = parse_size_text(kv["size"], f"{option} size")
        if "spindles" in kv:
            try:
                params["spindles"] = int(kv["spindles"])
            except ValueError:
                raise ParameterError(
                    option, f"spindles: expected an integer, got {kv['spindles']!r}"
                ) from None
    return DeviceChange(kind, action, ident, params)


def warnings_for(mods: list[DeviceChange], instance: str) -> list[str]:
    """The changes that cut a running guest off a device, one sentence each."""
    out = []
    for m in mods:
        if m.action == "remove" and m.kind == "nic":
            out.append(
                f"You are about to remove {m.describe()} of instance {instance}. If the "
                "instance is running, its guest loses this network interface now."
            )
        elif m.action == "remove":
            out.append(
                f"You are about to remove {m.describe()} of instance {instance}. This "
                "removes the disk and ALL ITS DATA; if the instance is running, its guest "
                "loses the disk now."
            )
        elif m.kind == "nic" and m.action == "modify" and "mac" in m.params:
            out.append(
                f"Changing the MAC address of {m.describe()} of instance {instance} is done "
                "by removing the NIC and adding a new one. If the instance is running, its "
                "guest loses the network connection on this interface."
            )
    return out


def build_modify_op(args: argparse.Namespace) -> tuple[dict[str, Any], list[DeviceChange]]:
    """The ``OP_INSTANCE_SET_PARAMS`` opcode for ``args`` and its device changes."""
    nics = [parse_device_change("nic", t) for t in args.net]
    disks = [parse_device_change("disk", t) for t in args.disk]
    op: dict[str, Any] = {
        "OP_ID": "OP_INSTANCE_SET_PARAMS",
        "instance_name": args.instance,
        "force": args.force,
        "wait_for_sync": args.wait_for_sync,
        **op_common(args),
    }
    if nics:
        op["nics"] = [m.to_op() for m in nics]
    if disks:
        op["disks"] = [m.to_op() for m in disks]
    for dest, opt in (("hvparams", "-H"), ("beparams", "-B"), ("osparams", "-O")):
        text = getattr(args, dest)
        if text:
            op[dest] = parse_keyval(text, f"{opt} ({dest})")
    if not (nics or disks or op.get("hvparams") or op.get("beparams") or op.get("osparams")):
        raise UsageError(
            "nothing to change: give at least one of -H, -B, -O, --net or --disk", ECode.INVAL
        )
    if args.hotplug is not None:
        op["hotplug"] = args.hotplug
    if args.hotplug_if_possible:
        op["hotplug_if_possible"] = True
    return op, nics + disks


def needs_restart_note(changes: list[tuple[str, str]], hotplug: bool | None) -> bool:
    """Whether some change waits for the next start (Ganeti's note then applies).

    Device changes go live unless hotplug was refused (``--no-hotplug``) or the
    master reports it deferred or failed; hypervisor, backend and OS
    parameters always wait for the next start.
    """
    if not changes:
        return False
    if hotplug is False:
        return True
    for param, change in changes:
        # "hotplug:done" may carry details: "hotplug:done (nic-… at 0x1e; tap …)".
        if change.startswith("hotplug:") and not change.startswith("hotplug:done"):
            return True
        if not param.startswith(("nic", "disk")):
            return True
    return False


def _pairs(result: Any) -> list[tuple[str, str]]:
    if not isinstance(result, list):
        return []
    return [(str(p[0]), str(p[1])) for p in result if isinstance(p, list | tuple) and len(p) == 2]


# --- modify --------------------------------------------------------------------------------


def setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("-H", "--hypervisor-parameters", dest="hvparams", metavar="K=V,…")
    p.add_argument("-B", "--backend-parameters", dest="beparams", metavar="K=V,…")
    p.add_argument("-O", "--os-parameters", dest="osparams", metavar="K=V,…")
    p.add_argument(
        "--net",
        action="append",
        default=[],
        metavar="SPEC",
        help="add[:K=V,…], N:add[,K=V,…], ID:remove or ID:modify,K=V,… (ID: index, name "
        "or UUID; keys: mac, ip, mode, link, vlan, network, name); repeatable",
    )
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="SPEC",
        help="add:size=S[,mode=rw|ro,name=N,spindles=S], N:add,size=S[,…], ID:remove or "
        "ID:modify,{mode,name}=V (ID: index, name or UUID); repeatable",
    )
    hot = p.add_mutually_exclusive_group()
    hot.add_argument(
        "--hotplug",
        dest="hotplug",
        action="store_const",
        const=True,
        default=None,
        help="apply NIC/disk changes to the running instance, or fail",
    )
    hot.add_argument(
        "--no-hotplug",
        dest="hotplug",
        action="store_const",
        const=False,
        help="apply NIC/disk changes only at the next start",
    )
    hot.add_argument(
        "--hotplug-if-possible",
        action="store_true",
        help="hotplug when possible, else apply at the next start (the default)",
    )
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="do not ask before removing devices; skip some checks",
    )
    p.add_argument(
        "--no-wait-for-sync",
        dest="wait_for_sync",
        action="store_false",
        help="do not wait for new disks to sync",
    )
    add_submit_options(p)


def run(client: Client, args: argparse.Namespace) -> int:
    op, mods = build_modify_op(args)
    warnings = warnings_for(mods, args.instance)
    if (
        warnings
        and not args.dry_run
        and not confirm("\n".join(warnings) + " Continue?", args.force)
    ):
        return EXIT_FAILURE
    result = submit_or_wait(client, [op], args)
    if args.submit:
        return EXIT_SUCCESS
    changes = _pairs(result)
    if args.dry_run:
        print(f"Dry run: the changes to instance {args.instance} are valid; nothing was changed")
        for param, change in changes:
            print(f" - {param:<5} -> {change}")
        return EXIT_SUCCESS
    if not changes:
        print(f"Not modified instance {args.instance}")
        return EXIT_SUCCESS
    print(f"Modified instance {args.instance}")
    for param, change in changes:
        print(f" - {param:<5} -> {change}")
    if needs_restart_note(changes, args.hotplug):
        print(NOT_LIVE_NOTE)
    return EXIT_SUCCESS


# --- grow-disk -----------------------------------------------------------------------------


def setup_grow_disk(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("disk", metavar="DISK", help="disk index")
    p.add_argument("amount", metavar="AMOUNT", help="size to add (e.g. 1G, 512M; default MiB)")
    p.add_argument("--absolute", action="store_true", help="AMOUNT is the new size, not the growth")
    p.add_argument(
        "--no-wait-for-sync",
        dest="wait_for_sync",
        action="store_false",
        help="do not wait for the disk to sync",
    )
    p.add_argument("--ignore-ipolicy", action="store_true", help="ignore instance policy limits")
    add_submit_options(p)


def build_grow_disk_op(args: argparse.Namespace) -> dict[str, Any]:
    if not args.disk.isdigit():
        raise ParameterError("disk", f"invalid disk index {args.disk!r} (expected 0, 1, …)")
    return {
        "OP_ID": "OP_INSTANCE_GROW_DISK",
        "instance_name": args.instance,
        "disk": int(args.disk),
        "amount": parse_size_text(args.amount, "amount"),
        "absolute": args.absolute,
        "wait_for_sync": args.wait_for_sync,
        "ignore_ipolicy": args.ignore_ipolicy,
        **op_common(args),
    }


def run_grow_disk(client: Client, args: argparse.Namespace) -> int:
    submit_or_wait(client, [build_grow_disk_op(args)], args)
    return EXIT_SUCCESS
