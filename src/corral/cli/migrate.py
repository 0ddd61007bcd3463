"""``gnt-instance migrate`` and ``gnt-instance failover``, Ganeti's syntax.

Layer: CLI. ``migrate [-f] [--non-live | --migration-mode=live|non-live]
[--cleanup] [-n NODE | -I ALLOC] [--allow-failover] INSTANCE`` moves a
running instance without stopping it; ``failover [-f] [--ignore-consistency]
[--shutdown-timeout N] [-n NODE | -I ALLOC] INSTANCE`` stops it and starts it
on the target. Both ask first unless ``-f``, with Ganeti's questions.

Also the pieces ``gnt-node migrate``/``evacuate`` share with them: the two
spellings of the migration mode, the one-target rule, and following the jobs
a node-wide opcode generates (Ganeti's ``{"jobs": [[ok, id], …]}`` result).
"""

from __future__ import annotations

import argparse
import re
import sys

from corral.cli.common import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    UsageError,
    add_submit_options,
    confirm,
    op_common,
    print_log_entry,
    seconds,
    submit_or_wait,
)
from corral.client import Client
from corral.errors import CorralError, ECode

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

MIGRATION_MODES = ("live", "non-live")
DEFAULT_SHUTDOWN_TIMEOUT = 120.0  # Ganeti's default, seconds


# --- shared with gnt-node ----------------------------------------------------------------


def add_migration_mode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--non-live",
        action="store_true",
        help="pause the instance while its memory is copied (same as --migration-mode=non-live)",
    )
    p.add_argument(
        "--migration-mode",
        choices=MIGRATION_MODES,
        help="live or non-live (default: the instance's migration_mode hypervisor parameter)",
    )


def migration_mode(non_live: bool, mode: str | None) -> str | None:
    """The opcode's ``mode``; ``None`` leaves it to the hypervisor parameter.

    ``--non-live`` is the old spelling of ``--migration-mode=non-live``; as in
    Ganeti, giving both is refused even when they agree.
    """
    if non_live and mode is not None:
        raise UsageError(
            "Only one of the --non-live and --migration-mode options can be passed", ECode.INVAL
        )
    return "non-live" if non_live else mode


def check_one_target(target_node: str | None, iallocator: str | None) -> None:
    if target_node and iallocator:
        raise UsageError(
            "Specify either an iallocator (-I), or a target node (-n) but not both", ECode.INVAL
        )


def nice_sort(names: list[str]) -> list[str]:
    """``inst2`` before ``inst10``, as Ganeti lists instances in its questions."""

    def key(name: str) -> list[tuple[int, int | str]]:
        return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]

    return sorted(names, key=key)


def follow_jobs(client: Client, result: Any) -> tuple[int, int]:
    """Wait for the jobs a node-wide opcode generated; ``(succeeded, failed)``.

    ``result`` is the opcode's result, Ganeti's ``{"jobs": [[True, job_id],
    [False, reason], …]}``; anything else means no jobs were generated. Each
    job's log is streamed; a failure is reported and the others still waited for.
    """
    jobs = result.get("jobs") if isinstance(result, dict) else None
    ok = failed = 0
    for entry in jobs if isinstance(jobs, list) else []:
        submitted, ident = entry
        if not submitted:
            print(f"Job not submitted: {ident}", file=sys.stderr)
            failed += 1
            continue
        try:
            client.wait_for_job(int(ident), print_log_entry)
        except CorralError as err:
            print(f"Job {ident} has failed: {err}", file=sys.stderr)
            failed += 1
        else:
            ok += 1
    return ok, failed


def add_target_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-n", "--target-node", metavar="NODE", help=f"node to {what} to")
    p.add_argument(
        "-I", "--iallocator", metavar="ALLOC", help="instance allocator choosing the target node"
    )
    p.add_argument("--ignore-ipolicy", action="store_true", help="ignore instance policy limits")


# --- migrate -------------------------------------------------------------------------------


def migrate_question(instance: str, cleanup: bool) -> str:
    """Ganeti's question before ``migrate`` (another one for ``--cleanup``)."""
    if cleanup:
        head = (
            f"Instance {instance} will be recovered from a failed migration. Note that the "
            "migration procedure (including cleanup)"
        )
    else:
        head = f"Instance {instance} will be migrated. Note that migration"
    return (
        f"{head} might impact the instance if anything goes wrong (e.g. due to bugs in the "
        "hypervisor). Continue?"
    )


def setup_migrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    add_migration_mode_options(p)
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="recover from a failed migration: find out where the instance runs and finish "
        "or roll back",
    )
    add_target_options(p, "migrate")
    p.add_argument(
        "--allow-failover",
        action="store_true",
        help="fail over (stop and start) if the instance cannot be migrated",
    )
    p.add_argument(
        "--no-runtime-changes",
        dest="allow_runtime_changes",
        action="store_false",
        help="do not change the instance at runtime (e.g. its memory) to make it fit the target",
    )
    add_submit_options(p)


def build_migrate_op(args: argparse.Namespace) -> dict[str, Any]:
    """The ``OP_INSTANCE_MIGRATE`` opcode for ``args``; bad combinations raise UsageError."""
    mode = migration_mode(args.non_live, args.migration_mode)
    check_one_target(args.target_node, args.iallocator)
    if args.cleanup:
        # Where the instance is was decided by the migration that failed.
        for given, option in (
            (args.target_node, "-n/--target-node"),
            (args.iallocator, "-I/--iallocator"),
            (args.allow_failover, "--allow-failover"),
        ):
            if given:
                raise UsageError(f"--cleanup cannot be combined with {option}", ECode.INVAL)
    op: dict[str, Any] = {
        "OP_ID": "OP_INSTANCE_MIGRATE",
        "instance_name": args.instance,
        "cleanup": args.cleanup,
        "allow_failover": args.allow_failover,
        "ignore_ipolicy": args.ignore_ipolicy,
        "allow_runtime_changes": args.allow_runtime_changes,
        **op_common(args),
    }
    if mode is not None:
        op["mode"] = mode
    if args.target_node:
        op["target_node"] = args.target_node
    if args.iallocator:
        op["iallocator"] = args.iallocator
    return op


def run_migrate(client: Client, args: argparse.Namespace) -> int:
    op = build_migrate_op(args)  # refuse bad options before asking
    if not args.dry_run and not confirm(migrate_question(args.instance, args.cleanup), args.force):
        return EXIT_FAILURE
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS


# --- failover ------------------------------------------------------------------------------


def failover_questions(instance: str, ignore_consistency: bool) -> list[str]:
    """Ganeti's questions before ``failover``; ``-f`` skips them all."""
    out = [
        f"Failover will happen to image {instance}. This requires a shutdown of the "
        "instance. Continue?"
    ]
    if ignore_consistency:
        # With shared storage, a primary that still runs the instance while the
        # target starts it means two guests writing the same disks.
        out.append(
            f"To failover instance {instance}, the source node must be marked offline "
            "first. Is this already the case?"
        )
    return out


def setup_failover(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--ignore-consistency",
        action="store_true",
        help="go on even if the primary node cannot be reached to stop the instance there",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=seconds,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="N",
        help="seconds to wait for a clean shutdown before forcing it (default 120)",
    )
    add_target_options(p, "fail over")
    add_submit_options(p)


def build_failover_op(args: argparse.Namespace) -> dict[str, Any]:
    """The ``OP_INSTANCE_FAILOVER`` opcode for ``args``."""
    check_one_target(args.target_node, args.iallocator)
    op: dict[str, Any] = {
        "OP_ID": "OP_INSTANCE_FAILOVER",
        "instance_name": args.instance,
        "ignore_consistency": args.ignore_consistency,
        "shutdown_timeout": args.shutdown_timeout,
        "ignore_ipolicy": args.ignore_ipolicy,
        **op_common(args),
    }
    if args.target_node:
        op["target_node"] = args.target_node
    if args.iallocator:
        op["iallocator"] = args.iallocator
    return op


def run_failover(client: Client, args: argparse.Namespace) -> int:
    op = build_failover_op(args)
    if not args.dry_run:
        for question in failover_questions(args.instance, args.ignore_consistency):
            if not confirm(question, args.force):
                return EXIT_FAILURE
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS
