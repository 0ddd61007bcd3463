"""``gnt-debug``: debugging commands (``delay``, ``locks``).

Layer: CLI.
"""

from __future__ import annotations

import argparse
import math

from corral.cli.common import (
    EXIT_SUCCESS,
    Command,
    add_submit_options,
    cli_main,
    op_common,
    print_table,
    submit_or_wait,
)
from corral.client import Client
from corral.errors import ParameterError


def _setup_delay(p: argparse.ArgumentParser) -> None:
    p.add_argument("duration", help="seconds to sleep")
    p.add_argument("--no-master", action="store_true", help="do not sleep on the master")
    p.add_argument("-n", "--node", action="append", default=[], help="also sleep on NODE")
    p.add_argument("-r", "--repeat", type=int, default=0, help="repeat this many times")
    p.add_argument("--interruptible", action="store_true")
    p.add_argument("--no-locks", action="store_true", default=True)
    add_submit_options(p, dry_run=False)


def cmd_delay(client: Client, args: argparse.Namespace) -> int:
    try:
        duration = float(args.duration)
    except ValueError:
        raise ParameterError("duration", f"not a number: {args.duration!r}") from None
    if not math.isfinite(duration):
        raise ParameterError("duration", f"not a finite number: {args.duration!r}")
    op = {
        "OP_ID": "OP_TEST_DELAY",
        "duration": duration,
        "on_master": not args.no_master,
        "on_nodes": args.node,
        "repeat": args.repeat,
        "interruptible": args.interruptible,
        **op_common(args),
    }
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS


def _setup_locks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("--separator")


def cmd_locks(client: Client, args: argparse.Namespace) -> int:
    rows = [
        [lv, name, ",".join(holders) or "-", str(waiters)]
        for lv, name, holders, waiters in client.call("GetLocks", [])
    ]
    print_table(
        ["Level", "Name", "Owners", "Pending"],
        rows,
        [False, False, False, True],
        args.separator,
        args.no_headers,
    )
    return EXIT_SUCCESS


COMMANDS = [
    Command("delay", cmd_delay, _setup_delay, "run a job that sleeps (testing)"),
    Command("locks", cmd_locks, _setup_locks, "show the locks held and waited for"),
]

main = cli_main("gnt-debug", COMMANDS, "Debugging commands")
