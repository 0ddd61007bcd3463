"""``gnt-instance reinstall``: run the OS create script again, Ganeti's syntax.

Layer: CLI. ``reinstall [-o OS] [-O k=v,…] [--force-variant] [-f]
[--force-multiple] [--all] INSTANCE…``: the instances must be stopped;
without ``-f`` (one instance) or ``--force-multiple`` (several) it asks
first, since a reinstall removes all data of the instance.
"""

from __future__ import annotations

import argparse

from corral.cli.common import (
    EXIT_FAILURE,
    UsageError,
    add_submit_options,
    confirm,
    op_common,
    parse_keyval,
    submit_each,
)
from corral.client import Client
from corral.errors import ECode

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any


def setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", nargs="*", metavar="INSTANCE")
    p.add_argument("-o", "--os-type", dest="os", help="install this OS (os+variant) instead")
    p.add_argument("-O", "--os-parameters", dest="osparams", metavar="K=V,…")
    p.add_argument(
        "--force-variant", action="store_true", help="accept a variant the OS does not declare"
    )
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--force-multiple",
        action="store_true",
        help="do not ask for confirmation when reinstalling several instances",
    )
    p.add_argument("--all", action="store_true", help="reinstall all instances")
    add_submit_options(p)


def _names(client: Client, args: argparse.Namespace) -> list[str]:
    if args.all:
        if args.instances:
            raise UsageError("give instance names or --all, not both", ECode.INVAL)
        return [row[0][1] for row in client.query("instance", ["name"])["data"]]
    if not args.instances:
        raise UsageError("no instance name given", ECode.INVAL)
    return list(dict.fromkeys(args.instances))


def run(client: Client, args: argparse.Namespace) -> int:
    names = _names(client, args)
    if not names:
        raise UsageError("Selection filter does not match any instances", ECode.INVAL)
    os_msg = f"change the OS to '{args.os}'" if args.os else "keep the same OS"
    if not args.dry_run:
        if args.all or len(names) > 1:
            question = (
                f"The reinstall will operate on {len(names)} instances: {', '.join(names)}\n"
                f"Note: this will remove *all* data for the below instances! It will {os_msg}.\n"
                "Do you want to continue?"
            )
            if not confirm(question, args.force_multiple):
                return EXIT_FAILURE
        elif not confirm(
            f"This will reinstall the instance '{names[0]}' (and {os_msg}) which removes all "
            "data. Continue?",
            args.force or args.force_multiple,
        ):
            return EXIT_FAILURE
    osparams = parse_keyval(args.osparams, "osparams") if args.osparams else None

    def op(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "OP_ID": "OP_INSTANCE_REINSTALL",
            "instance_name": name,
            "force_variant": args.force_variant,
            **op_common(args),
        }
        if args.os:
            out["os_type"] = args.os
        if osparams is not None:
            out["osparams"] = osparams
        return out

    return submit_each(client, args, names, op)
