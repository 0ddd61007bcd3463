"""``add-tags``, ``remove-tags`` and ``list-tags``, the same for every object kind.

Layer: CLI. ``gnt-cluster`` takes no object name; ``gnt-node`` and
``gnt-instance`` take it as the first argument, as in Ganeti.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from corral.cli.common import EXIT_SUCCESS, Command, UsageError, submit_or_wait
from corral.client import Client
from corral.errors import ECode, ParameterError


def read_tags(args: argparse.Namespace) -> list[str]:
    """Tags from the command line and, with ``--from FILE`` (``-``: stdin), a file."""
    tags = list(args.tags)
    if args.from_file:
        try:
            f = sys.stdin if args.from_file == "-" else open(args.from_file)  # noqa: SIM115
            with f:
                tags.extend(line.strip() for line in f if line.strip())
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise ParameterError(
                "from", f"cannot read tags from {args.from_file}: {reason}"
            ) from None
    if not tags:
        raise UsageError("no tags given", ECode.INVAL)
    return tags


def tag_commands(kind: str, noun: str) -> list[Command]:
    """The three tag commands for objects of ``kind`` ("cluster", "node", "instance")."""
    named = kind != "cluster"

    def setup_change(p: argparse.ArgumentParser) -> None:
        if named:
            p.add_argument("name", metavar=kind)
        p.add_argument("tags", nargs="*")
        p.add_argument("--from", dest="from_file", help="read tags from this file (- for stdin)")
        p.add_argument("--submit", action="store_true")

    def setup_list(p: argparse.ArgumentParser) -> None:
        if named:
            p.add_argument("name", metavar=kind)

    def change(op_id: str) -> Callable[[Client, argparse.Namespace], int]:
        def run(client: Client, args: argparse.Namespace) -> int:
            op = {"OP_ID": op_id, "kind": kind, "tags": read_tags(args)}
            if named:
                op["name"] = args.name
            submit_or_wait(client, [op], args)
            return EXIT_SUCCESS

        return run

    def list_tags(client: Client, args: argparse.Namespace) -> int:
        for t in client.call("QueryTags", [kind, args.name if named else None]):
            print(t)
        return EXIT_SUCCESS

    return [
        Command("add-tags", change("OP_TAGS_SET"), setup_change, f"add tags to {noun}"),
        Command("remove-tags", change("OP_TAGS_DEL"), setup_change, f"remove tags from {noun}"),
        Command("list-tags", list_tags, setup_list, f"list {noun}'s tags"),
    ]
