"""``gnt-network``: network commands, with Ganeti's syntax.

Layer: CLI. ``connect``/``disconnect`` without node groups act on every
group, one opcode per group in one job (as Ganeti); with more than one group
the job first runs as a dry run, so a refusal for any group changes nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from corral.cli.common import (
    EXIT_SUCCESS,
    Command,
    UsageError,
    add_list_options,
    add_submit_options,
    cli_main,
    list_command,
    list_fields_command,
    op_common,
    parse_keyval,
    setup_list_fields,
    split_escaped,
    submit_or_wait,
)
from corral.cli.tags import tag_commands
from corral.client import Client
from corral.errors import ECode, OpPrereqError, ParameterError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

DEFAULT_FIELDS = ["name", "network", "gateway", "mac_prefix", "group_list", "tags"]
NIC_MODES = ("bridged", "routed", "openvswitch", "ovn")
NIC_PARAMS = ("mode", "link", "vlan")

INFO_FIELDS = [
    "name",
    "uuid",
    "serial_no",
    "network",
    "gateway",
    "network6",
    "gateway6",
    "mac_prefix",
    "ovn_switch",
    "group_list",
    "inst_list",
]


def format_group_list(value: Any) -> str:
    """Ganeti's ``group (mode, link, vlan), …``."""
    return ", ".join(f"{g} ({m}, {lk}, {v})" for g, m, lk, v in value)


# --- list / info --------------------------------------------------------------------------------


def _setup_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("networks", nargs="*")
    add_list_options(p)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    return list_command(
        client,
        "network",
        args,
        DEFAULT_FIELDS,
        args.networks,
        formatters={"group_list": format_group_list},
    )


def cmd_list_fields(client: Client, args: argparse.Namespace) -> int:
    return list_fields_command(client, "network", args)


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("networks", nargs="*")


def _size(network: str | None) -> str:
    return str(ipaddress.ip_network(network).num_addresses) if network else "0"


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    res = client.query("network", INFO_FIELDS, None, args.networks or None)
    for row in res["data"]:
        v: dict[str, Any] = {
            f: (val if st == 0 else None) for f, (st, val) in zip(INFO_FIELDS, row, strict=True)
        }
        print(f"Network name: {v['name']}")
        print(f"UUID: {v['uuid']}")
        print(f"Serial number: {v['serial_no']}")
        print(f"  Subnet: {v['network']}")
        print(f"  Gateway: {v['gateway']}")
        print(f"  IPv6 Subnet: {v['network6']}")
        print(f"  IPv6 Gateway: {v['gateway6']}")
        print(f"  Mac Prefix: {v['mac_prefix']}")
        print(f"  Size: {_size(v['network'])}")
        print(f"  OVN logical switch: {v['ovn_switch']}")
        if v["group_list"]:
            print("  connected to node groups:")
            for group, mode, link, vlan in v["group_list"]:
                print(f"    {group} (mode:{mode} link:{link} vlan:{vlan})")
        else:
            print("  not connected to any node group")
        if v["inst_list"]:
            print(f"  used by {len(v['inst_list'])} instances:")
            nics = client.query(
                "instance", ["name", "nic.ips", "nic.networks"], None, v["inst_list"]
            )
            for (_, name), (_, ips), (_, nets) in nics["data"]:
                on = ", ".join(
                    f"{i}:{ip}"
                    for i, (ip, net) in enumerate(zip(ips, nets, strict=True))
                    if net == v["uuid"]
                )
                print(f"    {name}: {on}")
        else:
            print("  not used by any instances")
    return EXIT_SUCCESS


# --- add / remove / modify -----------------------------------------------------------------------


def _reserved_ips(value: str | None) -> list[str] | None:
    return None if value is None else [x for x in split_escaped(value) if x]


def _setup_add(p: argparse.ArgumentParser) -> None:
    p.add_argument("network_name", metavar="network")
    p.add_argument(
        "--network", metavar="CIDR", help="IPv4 network (mandatory), e.g. 198.51.100.0/24"
    )
    p.add_argument("--gateway", help="IPv4 gateway, inside the network")
    p.add_argument("--network6", metavar="CIDR", help="IPv6 network")
    p.add_argument("--gateway6", help="IPv6 gateway, inside the IPv6 network")
    p.add_argument("--mac-prefix", dest="mac_prefix", help="MAC prefix of the network's NICs")
    p.add_argument("--add-reserved-ips", dest="add_reserved_ips", help=argparse.SUPPRESS)
    p.add_argument("--no-conflicts-check", dest="conflicts_check", action="store_false")
    p.add_argument("--tags", help="comma-separated tags")
    ovn = p.add_mutually_exclusive_group()
    ovn.add_argument(
        "--ovn-switch", dest="ovn_switch", metavar="NAME", help="OVN logical switch backing it"
    )
    ovn.add_argument(
        "--ovn", action="store_true", help="backed by an OVN logical switch named like the network"
    )
    add_submit_options(p)


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    if args.network is None:
        raise UsageError("the --network option must be given", ECode.INVAL)
    op: dict[str, Any] = {
        "OP_ID": "OP_NETWORK_ADD",
        "network_name": args.network_name,
        "network": args.network,
        "conflicts_check": args.conflicts_check,
        **op_common(args),
    }
    for name in ("gateway", "network6", "gateway6", "mac_prefix"):
        if getattr(args, name) is not None:
            op[name] = getattr(args, name)
    if args.add_reserved_ips is not None:
        op["add_reserved_ips"] = _reserved_ips(args.add_reserved_ips)
    if args.tags:
        op["tags"] = [t for t in args.tags.split(",") if t]
    if args.ovn_switch or args.ovn:
        op["ovn_switch"] = args.ovn_switch or args.network_name
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS


def _setup_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("network_name", metavar="network")
    p.add_argument("-f", "--force", action="store_true")
    add_submit_options(p)


def cmd_remove(client: Client, args: argparse.Namespace) -> int:
    op = {
        "OP_ID": "OP_NETWORK_REMOVE",
        "network_name": args.network_name,
        "force": args.force,
        **op_common(args),
    }
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS


_MODIFY = ("gateway", "network6", "gateway6", "mac_prefix")


def _setup_modify(p: argparse.ArgumentParser) -> None:
    p.add_argument("network_name", metavar="network")
    p.add_argument("--gateway", help="new IPv4 gateway ('none' removes it)")
    p.add_argument("--network6", metavar="CIDR", help="new IPv6 network ('none' removes it)")
    p.add_argument("--gateway6", help="new IPv6 gateway ('none' removes it)")
    p.add_argument("--mac-prefix", dest="mac_prefix", help="new MAC prefix ('none' removes it)")
    p.add_argument("--add-reserved-ips", dest="add_reserved_ips", help=argparse.SUPPRESS)
    p.add_argument("--remove-reserved-ips", dest="remove_reserved_ips", help=argparse.SUPPRESS)
    add_submit_options(p)


def cmd_modify(client: Client, args: argparse.Namespace) -> int:
    op: dict[str, Any] = {
        "OP_ID": "OP_NETWORK_SET_PARAMS",
        "network_name": args.network_name,
        **op_common(args),
    }
    for name in _MODIFY:
        if getattr(args, name) is not None:
            op[name] = getattr(args, name)
    for name in ("add_reserved_ips", "remove_reserved_ips"):
        if getattr(args, name) is not None:
            op[name] = _reserved_ips(getattr(args, name))
    if not any(k in op for k in (*_MODIFY, "add_reserved_ips", "remove_reserved_ips")):
        raise UsageError("Please give at least one of the parameters.", ECode.INVAL)
    result = submit_or_wait(client, [op], args)
    if result:
        print(f"Modified network {args.network_name}")
        for name, value in result:
            print(f" - {name} -> {value if value is not None else 'none'}")
    return EXIT_SUCCESS


# --- connect / disconnect -------------------------------------------------------------------


def connect_params(
    positional: list[str], nicparams: str | None
) -> tuple[list[str], dict[str, str]]:
    """(groups, {mode, link, vlan}) from Ganeti's ``-N`` or an old positional form.

    ``NETWORK [-N mode=…,link=…] [GROUP…]`` is today's form; Ganeti 2.7-2.11
    took ``NETWORK MODE LINK [GROUP…]``, its design ``NETWORK GROUP MODE LINK``.
    A positional word is taken for a mode only without ``-N``.
    """
    if nicparams is not None:
        given = parse_keyval(nicparams, "nicparams")
        unknown = sorted(set(given) - set(NIC_PARAMS))
        if unknown:
            raise ParameterError(
                "nicparams",
                f"unknown NIC parameter(s) {', '.join(unknown)}; known: {', '.join(NIC_PARAMS)}",
            )
        return positional, given
    if len(positional) >= 2 and positional[0] in NIC_MODES:
        _deprecated()
        return positional[2:], {"mode": positional[0], "link": positional[1]}
    if len(positional) == 3 and positional[1] in NIC_MODES:
        _deprecated()
        return [positional[0]], {"mode": positional[1], "link": positional[2]}
    return positional, {}


def _deprecated() -> None:
    print(
        "Note: MODE and LINK as arguments are deprecated; use --nic-parameters=mode=…,link=…",
        file=sys.stderr,
    )


def resolve_groups(client: Client, wanted: list[str]) -> list[str]:
    """Group names (none given: every group), each checked to exist (name or UUID)."""
    rows = client.query("group", ["name", "uuid"])["data"]
    groups = [(name, uuid) for (_, name), (_, uuid) in rows]
    if not wanted:
        return [name for name, _ in groups]
    by_key = {k: name for name, uuid in groups for k in (name, uuid)}
    out = []
    for w in wanted:
        if w not in by_key:
            raise OpPrereqError(f"node group '{w}' not known", ECode.NOENT)
        out.append(by_key[w])
    return list(dict.fromkeys(out))


def _run_per_group(client: Client, args: argparse.Namespace, ops: list[dict[str, Any]]) -> None:
    """One job; with several groups a dry run of it first, so a refusal changes nothing."""
    if len(ops) > 1 and not getattr(args, "dry_run", False):
        job_id = client.submit_job([{**o, "dry_run": True} for o in ops])
        client.wait_for_job(job_id, None)
    submit_or_wait(client, ops, args)


def _setup_connect(p: argparse.ArgumentParser) -> None:
    p.add_argument("network_name", metavar="network")
    p.add_argument("groups", nargs="*", metavar="group", help="node groups (default: all)")
    p.add_argument(
        "-N",
        "--nic-parameters",
        dest="nicparams",
        metavar="mode=M,link=L[,vlan=V]",
        help="NIC parameters the network's NICs get in these groups",
    )
    p.add_argument("--no-conflicts-check", dest="conflicts_check", action="store_false")
    add_submit_options(p)


def cmd_connect(client: Client, args: argparse.Namespace) -> int:
    wanted, nicparams = connect_params(list(args.groups), args.nicparams)
    groups = resolve_groups(client, wanted)
    if not groups:
        raise UsageError("the cluster has no node groups", ECode.NOENT)
    base: dict[str, Any] = {
        "OP_ID": "OP_NETWORK_CONNECT",
        "network_name": args.network_name,
        "conflicts_check": args.conflicts_check,
        **op_common(args),
    }
    for key in NIC_PARAMS:
        if key in nicparams:
            base[f"network_{key}"] = nicparams[key]
    _run_per_group(client, args, [{**base, "group_name": g} for g in groups])
    return EXIT_SUCCESS


def _setup_disconnect(p: argparse.ArgumentParser) -> None:
    p.add_argument("network_name", metavar="network")
    p.add_argument("groups", nargs="*", metavar="group", help="node groups (default: all)")
    add_submit_options(p)


def cmd_disconnect(client: Client, args: argparse.Namespace) -> int:
    groups = resolve_groups(client, list(args.groups))
    ops = [
        {
            "OP_ID": "OP_NETWORK_DISCONNECT",
            "network_name": args.network_name,
            "group_name": g,
            **op_common(args),
        }
        for g in groups
    ]
    if ops:
        _run_per_group(client, args, ops)
    return EXIT_SUCCESS


COMMANDS = [
    Command("add", cmd_add, _setup_add, "add a network to the cluster"),
    Command("remove", cmd_remove, _setup_remove, "remove a network (not connected, unused)"),
    Command("modify", cmd_modify, _setup_modify, "change a network's gateways, IPv6, MAC prefix"),
    Command("connect", cmd_connect, _setup_connect, "connect a network to node groups"),
    Command("disconnect", cmd_disconnect, _setup_disconnect, "disconnect it from node groups"),
    Command("list", cmd_list, _setup_list, "list networks"),
    Command("list-fields", cmd_list_fields, setup_list_fields, "list the fields of networks"),
    Command("info", cmd_info, _setup_info, "show details of networks"),
    *tag_commands("network", "a network"),
]

main = cli_main("gnt-network", COMMANDS, "Network administration")

__all__ = ["main"]
