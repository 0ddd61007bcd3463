"""``gnt-instance``: instance commands, with Ganeti's syntax.

Layer: CLI.
"""

from __future__ import annotations

import argparse
import json
import time

from corral.cli import migrate
from corral.cli.common import (
    DISK_KEYS,
    EXIT_SUCCESS,
    NIC_KEYS,
    Command,
    UsageError,
    add_list_options,
    add_submit_options,
    cli_main,
    confirm,
    format_unit,
    indexed_options,
    lazy,
    list_command,
    list_fields_command,
    op_common,
    parse_hv_option,
    parse_keyval,
    parse_size_text,
    seconds,
    setup_list_fields,
    submit_each,
    submit_or_wait,
)
from corral.cli.tags import tag_commands
from corral.client import Client
from corral.errors import ECode, ParameterError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

DEFAULT_FIELDS = ["name", "hypervisor", "os", "pnode", "status", "oper_ram"]


def nic_defs(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for i, kv in enumerate(indexed_options(values, "nics")):
        unknown = set(kv) - NIC_KEYS
        if unknown:
            raise ParameterError(
                f"nics[{i}]",
                f"unknown NIC parameter(s) "
                f"{', '.join(sorted(unknown))}; known: "
                f"{', '.join(sorted(NIC_KEYS))}",
            )
        out.append(dict(kv))
    return out


def disk_def(kv: dict[str, str], field: str) -> dict[str, Any]:
    unknown = set(kv) - DISK_KEYS
    if unknown:
        raise ParameterError(
            field,
            f"unknown disk parameter(s) {', '.join(sorted(unknown))};"
            f" known: {', '.join(sorted(DISK_KEYS))}",
        )
    if "size" not in kv:
        raise ParameterError(field, "missing size (e.g. --disk 0:size=10G)")
    d: dict[str, Any] = {"size": parse_size_text(kv["size"], f"{field}.size")}
    if "mode" in kv:
        d["mode"] = kv["mode"]
    if "name" in kv:
        d["name"] = kv["name"]
    if "spindles" in kv:
        try:
            d["spindles"] = int(kv["spindles"])
        except ValueError:
            raise ParameterError(f"{field}.spindles", "expected an integer") from None
    return d


# --- add -----------------------------------------------------------------------------------


def _setup_add(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance")
    p.add_argument("-t", "--disk-template", help="diskless, file or sharedfile")
    p.add_argument("-o", "--os-type", default="", help="operating system (os+variant)")
    p.add_argument("-n", "--node", help="primary node")
    p.add_argument("-I", "--iallocator", help="instance allocator")
    p.add_argument("--disk", action="append", default=[], metavar="N:size=S[,mode=rw]")
    p.add_argument("-s", "--os-size", help="size of a single disk")
    p.add_argument("--net", action="append", default=[], metavar="N:k=v,…")
    p.add_argument("--no-nics", action="store_true", help="create the instance without NICs")
    p.add_argument("-H", "--hypervisor-parameters", dest="hvparams", metavar="HV[:K=V,…]")
    p.add_argument("-B", "--backend-parameters", dest="beparams", metavar="K=V,…")
    p.add_argument("-O", "--os-parameters", dest="osparams", metavar="K=V,…")
    p.add_argument("--no-start", action="store_true")
    p.add_argument("--no-install", action="store_true")
    p.add_argument("--force-variant", action="store_true", help="accept an undeclared variant")
    p.add_argument("--no-ip-check", action="store_true")
    p.add_argument("--no-name-check", action="store_true")
    p.add_argument("--tags", help="comma-separated tags")
    add_submit_options(p)


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    op: dict[str, Any] = {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": args.instance,
        "os_type": args.os_type,
        **op_common(args),
    }
    if args.disk and args.os_size:
        raise UsageError("--disk and -s are mutually exclusive", ECode.INVAL)
    disks = [
        disk_def(kv, f"disks[{i}]") for i, kv in enumerate(indexed_options(args.disk, "disks"))
    ]
    if args.os_size:
        disks = [{"size": parse_size_text(args.os_size, "os_size")}]
    op["disks"] = disks
    op["disk_template"] = args.disk_template or ("file" if disks else "diskless")
    if args.no_nics and args.net:
        raise UsageError("--no-nics and --net are mutually exclusive", ECode.INVAL)
    op["nics"] = [] if args.no_nics else (nic_defs(args.net) if args.net else [{}])
    if args.hvparams:
        hv, kv = parse_hv_option(args.hvparams)
        op["hypervisor"] = hv
        op["hvparams"] = kv
    if args.beparams:
        op["beparams"] = parse_keyval(args.beparams, "beparams")
    if args.osparams:
        op["osparams"] = parse_keyval(args.osparams, "osparams")
    if args.node:
        op["pnode"] = args.node
    if args.iallocator:
        op["iallocator"] = args.iallocator
    op["start"] = not args.no_start
    op["no_install"] = args.no_install
    op["force_variant"] = args.force_variant
    # Name and IP checks resolve the name in DNS, which the embedded cluster has
    # not; --no-name-check/--no-ip-check are accepted for Ganeti compatibility.
    op["ip_check"] = op["name_check"] = False
    if args.tags:
        op["tags"] = [t for t in args.tags.split(",") if t]
    result = submit_or_wait(client, [op], args)
    if args.dry_run and result is not None:
        print(f"Dry run: instance {args.instance} would be created on {', '.join(result)}")
    return EXIT_SUCCESS


# --- lifecycle ----------------------------------------------------------------------------


def _setup_multi(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", nargs="*")
    p.add_argument("--all", action="store_true", help="operate on all instances")
    p.add_argument(
        "--force-multiple",
        action="store_true",
        help="do not ask for confirmation when acting on several instances",
    )
    add_submit_options(p)


def _targets(client: Client, args: argparse.Namespace, action: str) -> list[str]:
    names: list[str] = list(args.instances)
    if args.all:
        if names:
            raise UsageError("give instance names or --all, not both", ECode.INVAL)
        res = client.query("instance", ["name"])
        names = [row[0][1] for row in res["data"]]
        if not names:
            print("No instances.")
            return []
    if not names:
        raise UsageError("no instance name given", ECode.INVAL)
    if len(names) > 1 and not confirm(
        f"The {action} will operate on {len(names)} instances.\nDo you want to continue?",
        args.force_multiple,
    ):
        raise UsageError("aborted", ECode.INVAL)
    return names


def _setup_startup(p: argparse.ArgumentParser) -> None:
    _setup_multi(p)
    p.add_argument(
        "-H",
        "--hypervisor-parameters",
        dest="hvparams",
        help="temporary hypervisor parameters (this start only)",
    )
    p.add_argument(
        "-B",
        "--backend-parameters",
        dest="beparams",
        help="temporary backend parameters (this start only)",
    )
    p.add_argument("-f", "--force", action="store_true", help="skip the memory check")
    p.add_argument("--paused", action="store_true", help="start paused")


def cmd_startup(client: Client, args: argparse.Namespace) -> int:
    names = _targets(client, args, "startup")
    hv = parse_keyval(args.hvparams, "hvparams") if args.hvparams else {}
    be = parse_keyval(args.beparams, "beparams") if args.beparams else {}
    return submit_each(
        client,
        args,
        names,
        lambda n: {
            "OP_ID": "OP_INSTANCE_STARTUP",
            "instance_name": n,
            "force": args.force,
            "hvparams": hv,
            "beparams": be,
            "startup_paused": args.paused,
            **op_common(args),
        },
    )


def _setup_shutdown(p: argparse.ArgumentParser) -> None:
    _setup_multi(p)
    p.add_argument(
        "--timeout",
        type=seconds,
        default=120.0,
        help="seconds to wait for a clean shutdown before forcing it",
    )
    p.add_argument("--no-remember", action="store_true", help="do not record the instance as down")
    p.add_argument("--ignore-offline", action="store_true")


def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    names = _targets(client, args, "shutdown")
    return submit_each(
        client,
        args,
        names,
        lambda n: {
            "OP_ID": "OP_INSTANCE_SHUTDOWN",
            "instance_name": n,
            "timeout": args.timeout,
            "no_remember": args.no_remember,
            "ignore_offline_nodes": args.ignore_offline,
            **op_common(args),
        },
    )


def _setup_reboot(p: argparse.ArgumentParser) -> None:
    _setup_multi(p)
    p.add_argument(
        "-t", "--type", dest="reboot_type", choices=["soft", "hard", "full"], default="soft"
    )
    p.add_argument("--shutdown-timeout", type=seconds, default=120.0)


def cmd_reboot(client: Client, args: argparse.Namespace) -> int:
    names = _targets(client, args, "reboot")
    return submit_each(
        client,
        args,
        names,
        lambda n: {
            "OP_ID": "OP_INSTANCE_REBOOT",
            "instance_name": n,
            "reboot_type": args.reboot_type,
            "shutdown_timeout": args.shutdown_timeout,
            **op_common(args),
        },
    )


def _setup_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--ignore-failures", action="store_true")
    p.add_argument("--shutdown-timeout", type=seconds, default=120.0)
    add_submit_options(p)


def cmd_remove(client: Client, args: argparse.Namespace) -> int:
    if not args.dry_run and not confirm(
        f"This will remove the volumes of the instance {args.instance} (including "
        "mirrors), thus removing all the data of the instance. Continue?",
        args.force,
    ):
        return 1
    submit_or_wait(
        client,
        [
            {
                "OP_ID": "OP_INSTANCE_REMOVE",
                "instance_name": args.instance,
                "ignore_failures": args.ignore_failures,
                "shutdown_timeout": args.shutdown_timeout,
                **op_common(args),
            }
        ],
        args,
    )
    return EXIT_SUCCESS


def _setup_rename(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance")
    p.add_argument("new_name")
    p.add_argument("--no-ip-check", action="store_true")
    p.add_argument("--no-name-check", action="store_true")
    add_submit_options(p)


def cmd_rename(client: Client, args: argparse.Namespace) -> int:
    submit_or_wait(
        client,
        [
            {
                "OP_ID": "OP_INSTANCE_RENAME",
                "instance_name": args.instance,
                "new_name": args.new_name,
                **op_common(args),
            }
        ],
        args,
    )
    return EXIT_SUCCESS


# --- queries ------------------------------------------------------------------------------


def _setup_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", nargs="*")
    add_list_options(p)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    return list_command(client, "instance", args, DEFAULT_FIELDS, args.instances)


def cmd_list_fields(client: Client, args: argparse.Namespace) -> int:
    return list_fields_command(client, "instance", args)


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", nargs="*")
    p.add_argument("-s", "--static", action="store_true", help="do not ask the nodes")
    p.add_argument("--all", action="store_true")


def _ts(v: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))


def _show_params(title: str, actual: dict[str, Any], own: dict[str, Any]) -> None:
    print(f"  {title}:")
    for k in sorted(actual):
        v = actual[k]
        shown = json.dumps(v) if not isinstance(v, str) else (v or '""')
        print(f"    {k}: {shown}" + ("" if k in own else " (default)"))


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    if not args.instances and not args.all:
        raise UsageError("give instance names or --all", ECode.INVAL)
    op = {"OP_ID": "OP_INSTANCE_QUERY_DATA", "instances": args.instances, "static": args.static}
    job_id = client.submit_job([op])
    (result,) = client.wait_for_job(job_id)
    for name in sorted(result):
        i = result[name]
        print(f"Instance name: {i['name']}")
        print(f"UUID: {i['uuid']}")
        print(f"Serial number: {i['serial_no']}")
        print(f"Creation time: {_ts(i['ctime'])}")
        print(f"Modification time: {_ts(i['mtime'])}")
        print(f"State: configured to be {i['config_state']}, actual state is {i['run_state']}")
        live = i.get("runtime")
        if live:
            print(
                f"  Running: pid {live['pid']}, memory {live['memory']} MiB, "
                f"{live['vcpus']} VCPUs, up {live['uptime']:.0f} s"
            )
        if i.get("pending"):
            print("  Pending changes (configuration differs from the running instance):")
            for msg in i["pending"]:
                print(f"    - {msg}")
        if i.get("network_port") is not None:
            print(f"  Allocated network port: {i['network_port']}")
        if i.get("console"):
            print(f"  - console connection: {i['console']}")
        print("  Nodes:")
        print(f"    - primary: {i['pnode']}")
        print(f"      group: {i['group']}")
        print("    - secondaries: ")
        print(f"  Operating system: {i['os'] or '(none)'}")
        print(f"  Hypervisor: {i['hypervisor']}")
        print(f"  Disk template: {i['disk_template']}")
        print(f"  Tags: {', '.join(i['tags']) or '(none)'}")
        _show_params("Hypervisor parameters", i["hv_actual"], i["hv_instance"])
        be_own = set(i["be_instance"])
        _show_params("Back-end parameters", i["be_actual"], {k: 1 for k in be_own})
        print("  NICs:")
        for n in i["nics"]:
            print(f"    - nic/{n['idx']}: ")
            print(f"      MAC: {n['mac']}")
            print(f"      IP: {n['ip'] or 'None'}")
            print(f"      mode: {n['mode']}")
            print(f"      link: {n['link']}")
            print(f"      vlan: {n['vlan']}")
            print(f"      name: {n['name'] or 'None'}")
            print(f"      UUID: {n['uuid']}")
        print("  Disks:")
        for d in i["disks"]:
            print(f"    - disk/{d['idx']}: {d['dev_type']}, size {format_unit(d['size'], 'h')}")
            print(f"      access mode: {d['mode']}")
            print(f"      name: {d['name'] or 'None'}")
            print(f"      UUID: {d['uuid']}")
            if d["path"]:
                print(f"      on primary: {d['path']}")
    return EXIT_SUCCESS


COMMANDS = [
    Command("add", cmd_add, _setup_add, "create an instance"),
    Command("list", cmd_list, _setup_list, "list instances"),
    Command("list-fields", cmd_list_fields, setup_list_fields, "list the fields of instances"),
    Command("info", cmd_info, _setup_info, "show details of instances"),
    Command("startup", cmd_startup, _setup_startup, "start instances", ("start",)),
    Command("shutdown", cmd_shutdown, _setup_shutdown, "stop instances", ("stop",)),
    Command("reboot", cmd_reboot, _setup_reboot, "reboot instances"),
    Command("remove", cmd_remove, _setup_remove, "remove an instance and its disks"),
    Command("rename", cmd_rename, _setup_rename, "rename a stopped instance"),
    # In their own modules, imported only by the command that needs them.
    Command(
        "reinstall",
        lazy("reinstall", "run"),
        lazy("reinstall", "setup"),
        "reinstall stopped instances",
    ),
    Command(
        "modify",
        lazy("modify", "run"),
        lazy("modify", "setup"),
        "change NICs, disks or parameters of an instance",
    ),
    Command(
        "grow-disk",
        lazy("modify", "run_grow_disk"),
        lazy("modify", "setup_grow_disk"),
        "grow an instance disk",
    ),
    Command(
        "console",
        lazy("console", "run"),
        lazy("console", "setup"),
        "connect to the console of an instance",
    ),
    Command("migrate", migrate.run_migrate, migrate.setup_migrate, "migrate an instance (live)"),
    Command(
        "failover",
        migrate.run_failover,
        migrate.setup_failover,
        "stop an instance and start it on another node",
    ),
    *tag_commands("instance", "an instance"),
]


main = cli_main("gnt-instance", COMMANDS, "Instance administration")

__all__ = ["main"]
