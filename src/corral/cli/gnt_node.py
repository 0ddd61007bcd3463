"""``gnt-node``: node commands, with Ganeti's syntax.

Layer: CLI.
"""

from __future__ import annotations

import argparse
import sys

from corral.cli.common import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    Command,
    UsageError,
    add_list_options,
    add_submit_options,
    cli_main,
    confirm,
    format_unit,
    list_command,
    list_fields_command,
    op_common,
    setup_list_fields,
    submit_or_wait,
)
from corral.cli.migrate import (
    add_migration_mode_options,
    add_target_options,
    check_one_target,
    follow_jobs,
    migration_mode,
    nice_sort,
)
from corral.cli.tags import tag_commands
from corral.client import Client
from corral.errors import ECode

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

DEFAULT_FIELDS = ["name", "dtotal", "dfree", "mtotal", "mnode", "mfree", "pinst_cnt", "sinst_cnt"]

INFO_FIELDS = [
    "name",
    "uuid",
    "pip",
    "sip",
    "group",
    "master",
    "master_candidate",
    "master_capable",
    "vm_capable",
    "offline",
    "drained",
    "role",
    "tags",
    "pinst_list",
    "sinst_list",
    "mtotal",
    "mnode",
    "mfree",
    "dtotal",
    "dfree",
    "ctotal",
]

_ROLES = {"M": "master", "C": "master candidate", "R": "regular", "D": "drained", "O": "offline"}


def _setup_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", nargs="*")
    add_list_options(p)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    return list_command(client, "node", args, DEFAULT_FIELDS, args.nodes)


def cmd_list_fields(client: Client, args: argparse.Namespace) -> int:
    return list_fields_command(client, "node", args)


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", nargs="*")


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    res = client.query("node", INFO_FIELDS, None, args.nodes or None)
    for row in res["data"]:
        v: dict[str, Any] = {
            f: (val if st == 0 else None) for f, (st, val) in zip(INFO_FIELDS, row, strict=True)
        }
        print(f"Node name: {v['name']}")
        print(f"  UUID: {v['uuid']}")
        print(f"  primary ip: {v['pip']}")
        print(f"  secondary ip: {v['sip']}")
        print(f"  node group: {v['group']}")
        print(f"  role: {_ROLES.get(v['role'], v['role'])}")
        for flag in ("master_candidate", "master_capable", "vm_capable", "offline", "drained"):
            print(f"  {flag.replace('_', ' ')}: {'True' if v[flag] else 'False'}")
        print(f"  tags: {', '.join(v['tags']) or '(none)'}")
        for label, key in (
            ("total memory", "mtotal"),
            ("memory used by node", "mnode"),
            ("free memory", "mfree"),
            ("total disk", "dtotal"),
            ("free disk", "dfree"),
        ):
            val = v[key]
            print(f"  {label}: {format_unit(val, 'h') if val is not None else '?'}")
        print(f"  CPUs: {v['ctotal'] if v['ctotal'] is not None else '?'}")
        print("  primary for instances:")
        for name in v["pinst_list"] or []:
            print(f"    - {name}")
        print("  secondary for instances:")
        for name in v["sinst_list"] or []:
            print(f"    - {name}")
    return EXIT_SUCCESS


def _setup_add(p: argparse.ArgumentParser) -> None:
    p.add_argument("node")
    p.add_argument(
        "--primary-ip",
        "-p",
        dest="primary_ip",
        required=True,
        help="the node's address on the management network",
    )
    p.add_argument("-s", "--secondary-ip", dest="secondary_ip")
    p.add_argument(
        "--join", help="FINGERPRINT:TOKEN from 'corral-noded --join-info' on the new node"
    )
    p.add_argument("--readd", action="store_true", help="re-enrol a node already known")
    p.add_argument("-g", "--node-group", dest="group")
    p.add_argument("--master-capable", choices=["yes", "no"], default="yes")
    p.add_argument("--vm-capable", choices=["yes", "no"], default="yes")
    add_submit_options(p)


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    op: dict[str, Any] = {
        "OP_ID": "OP_NODE_ADD",
        "node_name": args.node,
        "primary_ip": args.primary_ip,
        "readd": args.readd,
        "master_capable": args.master_capable == "yes",
        "vm_capable": args.vm_capable == "yes",
        **op_common(args),
    }
    for name in ("secondary_ip", "join", "group"):
        if getattr(args, name):
            op[name] = getattr(args, name)
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS


def _setup_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("node")
    add_submit_options(p)


def cmd_remove(client: Client, args: argparse.Namespace) -> int:
    submit_or_wait(
        client, [{"OP_ID": "OP_NODE_REMOVE", "node_name": args.node, **op_common(args)}], args
    )
    return EXIT_SUCCESS


_FLAGS = ("master_candidate", "offline", "drained", "master_capable", "vm_capable")


def _setup_modify(p: argparse.ArgumentParser) -> None:
    p.add_argument("node")
    for flag in _FLAGS:
        opt = "--" + flag.replace("_", "-")
        short = {"master_candidate": "-C", "offline": "-O", "drained": "-D"}.get(flag)
        names = [opt] + ([short] if short else [])
        p.add_argument(*names, dest=flag, choices=["yes", "no"])
    p.add_argument("--force", action="store_true")
    p.add_argument("--auto-promote", action="store_true")
    add_submit_options(p)


def cmd_modify(client: Client, args: argparse.Namespace) -> int:
    op: dict[str, Any] = {
        "OP_ID": "OP_NODE_SET_PARAMS",
        "node_name": args.node,
        "force": args.force,
        "auto_promote": args.auto_promote,
        **op_common(args),
    }
    for flag in _FLAGS:
        v = getattr(args, flag)
        if v is not None:
            op[flag] = v == "yes"
    result = submit_or_wait(client, [op], args)
    if result:
        print(f"Modified node {args.node}")
        for name, value in result:
            print(f" - {name} -> {value}")
    return EXIT_SUCCESS


# --- migrate / evacuate: one opcode, which generates a job per instance ---------------------


def _node_instances(client: Client, node: str, fields: list[str]) -> list[str]:
    """The instances in the node's ``fields`` (``pinst_list``, ``sinst_list``), sorted."""
    names: list[str] = []
    for row in client.query("node", fields, None, [node])["data"]:
        for status, value in row:
            if status == 0 and isinstance(value, list):
                names.extend(str(v) for v in value)
    return nice_sort(list(dict.fromkeys(names)))


def _setup_migrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("node")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    add_migration_mode_options(p)
    add_target_options(p, "migrate the instances")
    add_submit_options(p, dry_run=False)


def cmd_migrate(client: Client, args: argparse.Namespace) -> int:
    mode = migration_mode(args.non_live, args.migration_mode)
    check_one_target(args.target_node, args.iallocator)
    instances = _node_instances(client, args.node, ["pinst_list"])
    if not instances:
        print(f"No primary instances on node {args.node}, exiting.")
        return EXIT_SUCCESS
    if not confirm(f"Migrate instance(s) {', '.join(instances)}?", args.force):
        return EXIT_FAILURE
    op: dict[str, Any] = {
        "OP_ID": "OP_NODE_MIGRATE",
        "node_name": args.node,
        "ignore_ipolicy": args.ignore_ipolicy,
        **op_common(args),
    }
    for key, value in (
        ("mode", mode),
        ("target_node", args.target_node),
        ("iallocator", args.iallocator),
    ):
        if value:
            op[key] = value
    result = submit_or_wait(client, [op], args)
    if args.submit:
        return EXIT_SUCCESS
    _, failed = follow_jobs(client, result)
    if failed:
        print(f"There were {failed} errors during the node migration.")
        return EXIT_FAILURE
    print("All instances migrated successfully.")
    return EXIT_SUCCESS


def _setup_evacuate(p: argparse.ArgumentParser) -> None:
    p.add_argument("node")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("-p", "--primary-only", action="store_true", help="only primary instances")
    p.add_argument("-s", "--secondary-only", action="store_true", help="only secondary instances")
    p.add_argument(
        "-n",
        "--new-secondary",
        dest="remote_node",
        metavar="NODE",
        help="new secondary node for the secondary instances (implies --secondary-only)",
    )
    p.add_argument(
        "-I", "--iallocator", metavar="ALLOC", help="instance allocator choosing the new nodes"
    )
    p.add_argument(
        "--early-release", action="store_true", help="release locks early (secondary moves)"
    )
    add_submit_options(p, dry_run=False)


def _evacuation_mode(args: argparse.Namespace) -> str:
    if args.primary_only and args.secondary_only:
        raise UsageError(
            "Only one of the --primary-only and --secondary-only options can be passed",
            ECode.INVAL,
        )
    if args.remote_node:
        if args.primary_only:
            raise UsageError(
                "-n/--new-secondary moves secondary instances; it cannot be combined "
                "with --primary-only",
                ECode.INVAL,
            )
        check_one_target(args.remote_node, args.iallocator)
        if not args.secondary_only:
            print(
                "New secondary node given (disabling iallocator), hence evacuating "
                "secondary instances only.",
                file=sys.stderr,
            )
        return "secondary-only"
    if args.primary_only:
        return "primary-only"
    return "secondary-only" if args.secondary_only else "all"


def cmd_evacuate(client: Client, args: argparse.Namespace) -> int:
    mode = _evacuation_mode(args)
    fields = [
        f
        for f, skip in (("pinst_list", "secondary-only"), ("sinst_list", "primary-only"))
        if mode != skip
    ]
    instances = _node_instances(client, args.node, fields)
    if not instances:
        print(f"No instances to evacuate on node(s) {args.node}, exiting.", file=sys.stderr)
        return EXIT_SUCCESS
    if not confirm(
        f"Relocate instance(s) {', '.join(instances)} from node(s) {args.node}?", args.force
    ):
        return EXIT_FAILURE
    op: dict[str, Any] = {
        "OP_ID": "OP_NODE_EVACUATE",
        "node_name": args.node,
        "mode": mode,
        "early_release": args.early_release,
        **op_common(args),
    }
    if args.remote_node:
        op["remote_node"] = args.remote_node
    if args.iallocator:
        op["iallocator"] = args.iallocator
    result = submit_or_wait(client, [op], args)
    if args.submit:
        return EXIT_SUCCESS
    _, failed = follow_jobs(client, result)
    if failed:
        print(f"There were {failed} errors during the evacuation.")
        return EXIT_FAILURE
    print("All instances evacuated successfully.")
    return EXIT_SUCCESS


COMMANDS = [
    Command("add", cmd_add, _setup_add, "enrol a node into the cluster"),
    Command("remove", cmd_remove, _setup_remove, "remove a node and revoke its certificate"),
    Command("modify", cmd_modify, _setup_modify, "change a node's roles and flags"),
    Command("list", cmd_list, _setup_list, "list nodes"),
    Command("list-fields", cmd_list_fields, setup_list_fields, "list the fields of nodes"),
    Command("info", cmd_info, _setup_info, "show details of nodes"),
    Command("migrate", cmd_migrate, _setup_migrate, "migrate all primary instances of a node"),
    Command("evacuate", cmd_evacuate, _setup_evacuate, "move all instances off a node"),
    *tag_commands("node", "a node"),
]

main = cli_main("gnt-node", COMMANDS, "Node administration")
