"""``gnt-os``: the OS definitions of the cluster's nodes, with Ganeti's output.

Layer: CLI. ``list`` shows every OS valid on all nodes (one line per
variant, ``os+variant``); ``diagnose`` shows each OS's status per node,
with why a definition is invalid, and exits 1 when any OS is not valid
everywhere; ``info`` shows variants, parameters and API versions.
"""

from __future__ import annotations

import argparse
import re

from corral.cli.common import (
    EXIT_SUCCESS,
    PRIORITIES,
    Command,
    cli_main,
    print_table,
)
from corral.client import Client

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

API_V15, API_V20 = 15, 20


def _nicesort_key(name: str) -> list[Any]:
    parts: list[Any] = re.split(r"(\d+)", name)
    parts[1::2] = map(int, parts[1::2])
    return parts


def _add_priority(p: argparse.ArgumentParser) -> None:
    p.add_argument("--priority", choices=sorted(PRIORITIES), default="normal", help="job priority")


def _query(client: Client, args: argparse.Namespace, fields: list[str]) -> list[list[Any]]:
    op = {
        "OP_ID": "OP_OS_DIAGNOSE",
        "output_fields": fields,
        "names": [],
        "priority": PRIORITIES[args.priority],
    }
    job_id = client.submit_job([op])
    (result,) = client.wait_for_job(job_id)
    rows: list[list[Any]] = result
    return rows


def os_names(name: str, variants: list[str]) -> list[str]:
    """``name+variant`` for each variant, or the bare name (Ganeti's CalculateOSNames)."""
    return [f"{name}+{v}" for v in variants] if variants else [name]


# --- list ----------------------------------------------------------------------------------


def _setup_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-headers", action="store_true", help="do not print column headers")
    _add_priority(p)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    rows = [
        [n]
        for name, variants in _query(client, args, ["name", "variants"])
        for n in os_names(name, variants)
    ]
    print_table(["Name"], rows, [False], None, args.no_headers)
    return EXIT_SUCCESS


# --- diagnose --------------------------------------------------------------------------------


def _status(valid: bool, diagnose: str) -> str:
    return "valid" if valid else f"invalid - {diagnose}"


def _node_message(entry: list[Any]) -> str:
    path, valid, diagnose, variants, params, api = entry
    msg = f"{_status(valid, diagnose)} (path: {path})"
    if api:
        msg += f" [API versions: {', '.join(map(str, api))}]"
    else:
        msg += " [no API versions declared]"
    top = max(api) if api else 0
    if top >= API_V15:
        msg += f" [variants: {', '.join(variants)}]" if variants else " [no variants]"
    if top >= API_V20:
        msg += f" [parameters: {', '.join(p[0] for p in params)}]" if params else " [no parameters]"
    return msg


def _setup_diagnose(p: argparse.ArgumentParser) -> None:
    _add_priority(p)


def cmd_diagnose(client: Client, args: argparse.Namespace) -> int:
    fields = ["name", "valid", "variants", "node_status", "hidden", "blacklisted"]
    has_bad = False
    for name, _valid, variants, node_status, hidden, blacklisted in _query(client, args, fields):
        good: dict[str, str] = {}
        bad: dict[str, str] = {}
        shadowed: dict[str, list[str]] = {}
        for node, entries in node_status.items():
            shadowed[node] = [
                f"    [hidden] path: {e[0]}, status: {_status(e[1], e[2])}" for e in entries[1:]
            ]
            if not entries:
                bad[node] = "OS not found"
            elif entries[0][1]:
                good[node] = _node_message(entries[0])
            else:
                bad[node] = _node_message(entries[0])
        if good and not bad:
            status = "valid"
        elif bad and not good:
            status = "invalid"
        else:
            status = "partial valid"
        has_bad = has_bad or status != "valid"
        line = f"OS: {name} [global status: {status}]"
        if hidden:
            line += " [hidden]"
        if blacklisted:
            line += " [blacklisted]"
        print(line)
        if variants:
            print(f"  Variants: [{', '.join(variants)}]")
        for group in (good, bad):
            for node in sorted(group, key=_nicesort_key):
                print(f"  Node: {node}, status: {group[node]}")
                for text in shadowed[node]:
                    print(text)
        print()
    return 1 if has_bad else EXIT_SUCCESS


# --- info --------------------------------------------------------------------------------------


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("oses", nargs="*", metavar="OS")
    _add_priority(p)


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    fields = ["name", "valid", "variants", "parameters", "api_versions", "blacklisted", "hidden"]
    wanted = list(args.oses)
    for name, valid, variants, parameters, api, blacklisted, hidden in _query(client, args, fields):
        if wanted:
            if name not in wanted:
                continue
            wanted.remove(name)
        print(f"{name}:")
        print(f"  - valid: {valid}")
        print(f"  - hidden: {hidden}")
        print(f"  - blacklisted: {blacklisted}")
        if valid:
            print("  - API versions:")
            for v in sorted(api):
                print(f"    - {v}")
            print("  - variants:")
            for v in variants:
                print(f"    - {v}")
            print("  - parameters:")
            for pname, pdesc in parameters:
                print(f"    - {pname}: {pdesc}")
        print()
    for name in wanted:  # Ganeti prints unknown names with nothing under them
        print(f"{name}: ")
        print()
    return EXIT_SUCCESS


COMMANDS = [
    Command("list", cmd_list, _setup_list, "list the operating systems valid on all nodes"),
    Command("diagnose", cmd_diagnose, _setup_diagnose, "diagnose all operating systems"),
    Command("info", cmd_info, _setup_info, "show details of operating systems", aliases=("show",)),
]


main = cli_main("gnt-os", COMMANDS, "Operating system definitions")

__all__ = ["main"]
