"""``gnt-cluster``: cluster-wide commands, with Ganeti's syntax.

Layer: CLI.
"""

from __future__ import annotations

import argparse
import sys
import time

from corral.cli.common import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    Command,
    UsageError,
    cli_main,
    op_common,
    parse_hv_option,
    parse_keyval,
    submit_or_wait,
)
from corral.cli.tags import tag_commands
from corral.client import Client
from corral.errors import ECode, ParameterError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any


def _hv_options(values: list[str] | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for v in values or []:
        hv, kv = parse_hv_option(v)
        out.setdefault(hv, {}).update(kv)
    return out


def _disk_options(values: list[str] | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for v in values or []:
        tpl, _, rest = v.partition(":")
        if not tpl:
            raise ParameterError("diskparams", f"invalid -D value {v!r} (template:k=v)")
        out.setdefault(tpl, {}).update(parse_keyval(rest, "diskparams"))
    return out


def _list_option(value: str | None, field: str = "list") -> list[str] | None:
    if value is None:
        return None
    items = [x for x in value.split(",") if x]
    if not items:
        raise ParameterError(field, f"empty list {value!r}")
    return items


def _add_param_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-H",
        "--hypervisor-parameters",
        dest="hvparams",
        action="append",
        metavar="HV:K=V",
        help="hypervisor parameters (repeatable)",
    )
    p.add_argument(
        "-B",
        "--backend-parameters",
        dest="beparams",
        metavar="K=V",
        help="backend parameters (memory, vcpus, auto_balance, …)",
    )
    p.add_argument(
        "-N",
        "--nic-parameters",
        dest="nicparams",
        metavar="K=V",
        help="NIC parameters (mode, link, vlan)",
    )
    p.add_argument(
        "-D",
        "--disk-parameters",
        dest="diskparams",
        action="append",
        metavar="TEMPLATE:K=V",
        help="disk parameters (repeatable)",
    )
    p.add_argument("--enabled-hypervisors", help="comma-separated hypervisors")
    p.add_argument("--enabled-disk-templates", help="comma-separated disk templates")
    p.add_argument("-C", "--candidate-pool-size", type=int)
    p.add_argument("-m", "--mac-prefix")


# --- init / destroy ----------------------------------------------------------------------


def _setup_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("cluster_name")
    _add_param_options(p)
    p.add_argument("--node-name", help="name of this node (default: the host name)")
    p.add_argument("--master-ip", default="127.0.0.1", help="IP of the master node")
    p.add_argument(
        "--noded-port",
        type=int,
        default=1811,
        help="TCP port of corral-noded on every node (default 1811)",
    )
    p.add_argument("--file-storage-dir")
    p.add_argument("--shared-file-storage-dir")
    p.add_argument(
        "--no-start-master",
        action="store_true",
        help="write the config but do not start corral-masterd",
    )


def cmd_init(client: Client, args: argparse.Namespace) -> int:
    from corral import bootstrap
    from corral.daemons import masterd, noded
    from corral.paths import Paths  # pathlib: only the commands that need it

    paths = Paths.from_env()
    data = bootstrap.init_cluster(
        paths,
        args.cluster_name,
        node_name=args.node_name,
        enabled_hypervisors=_list_option(args.enabled_hypervisors, "enabled_hypervisors"),
        hvparams=_hv_options(args.hvparams),
        beparams=parse_keyval(args.beparams or "", "beparams"),
        nicparams=parse_keyval(args.nicparams or "", "nicparams"),
        diskparams=_disk_options(args.diskparams),
        enabled_disk_templates=_list_option(args.enabled_disk_templates, "enabled_disk_templates"),
        mac_prefix=args.mac_prefix or "aa:00:00",
        master_ip=args.master_ip,
        candidate_pool_size=args.candidate_pool_size or 10,
        file_storage_dir=args.file_storage_dir,
        shared_file_storage_dir=args.shared_file_storage_dir,
        noded_port=args.noded_port,
    )
    if not args.no_start_master:
        noded.start_background(paths, args.master_ip, args.noded_port)
        masterd.start_background(paths)
    master = data.nodes[data.cluster.master_node].name
    print(f"Cluster {data.cluster.cluster_name} initialised; master node {master}")
    return EXIT_SUCCESS


def _setup_destroy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--yes-do-it", action="store_true", help="confirm that the cluster must be destroyed"
    )


def cmd_destroy(client: Client, args: argparse.Namespace) -> int:
    from corral import bootstrap
    from corral.daemons import noded

    if not args.yes_do_it:
        raise UsageError("destroying a cluster is irreversible; run with --yes-do-it", ECode.INVAL)
    submit_or_wait(client, [{"OP_ID": "OP_CLUSTER_DESTROY"}], args)
    client.close()
    from corral.paths import Paths  # pathlib: only the commands that need it

    paths = Paths.from_env()
    bootstrap.stop_masterd(paths)
    noded.stop(paths)
    bootstrap.remove_cluster_state(paths)
    print("Cluster destroyed")
    return EXIT_SUCCESS


def _setup_failover(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-voting",
        action="store_true",
        help="take over even without a majority of master candidates (dangerous)",
    )
    p.add_argument("--yes-do-it", action="store_true", help="confirm --no-voting")


def cmd_master_failover(client: Client, args: argparse.Namespace) -> int:
    import asyncio

    from corral import failover
    from corral.daemons import masterd

    if args.no_voting and not args.yes_do_it:
        raise UsageError(
            "--no-voting can give two masters if the old one is alive; add --yes-do-it to confirm",
            ECode.INVAL,
        )
    from corral.paths import Paths  # pathlib: only the commands that need it

    paths = Paths.from_env()
    old = asyncio.run(failover.master_failover(paths, no_voting=args.no_voting))
    masterd.start_background(paths, extra_args=["--no-voting"] if args.no_voting else [])
    print(f"Master failover done: {failover.my_name(paths)} is the master (was {old})")
    return EXIT_SUCCESS


# --- queries ---------------------------------------------------------------------------


def cmd_getmaster(client: Client, args: argparse.Namespace) -> int:
    (master,) = client.call("QueryConfigValues", [["master_node"]])
    print(master)
    return EXIT_SUCCESS


def _print_dict(d: dict[str, Any], indent: int) -> None:
    pad = "  " * indent
    for k, v in d.items():
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print_dict(v, indent + 1)
        elif isinstance(v, list):
            print(f"{pad}{k}: {', '.join(map(str, v))}")
        else:
            print(f"{pad}{k}: {v}")


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    info = client.call("QueryClusterInfo", [])
    ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["ctime"]))
    mts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["mtime"]))
    print(f"Cluster name: {info['name']}")
    print(f"Cluster UUID: {info['uuid']}")
    print(f"Creation time: {ts}")
    print(f"Modification time: {mts}")
    print(f"Master node: {info['master']}")
    print(f"Architecture (this node): {sys.platform}")
    print(f"Tags: {', '.join(info['tags']) or '(none)'}")
    print(f"Default hypervisor: {info['default_hypervisor']}")
    print(f"Enabled hypervisors: {', '.join(info['enabled_hypervisors'])}")
    print("Hypervisor parameters:")
    _print_dict(info["hvparams"], 1)
    print("Cluster parameters:")
    print(f"  candidate pool size: {info['candidate_pool_size']}")
    print(f"  MAC prefix: {info['mac_prefix']}")
    print(f"  file storage path: {info['file_storage_dir']}")
    print(f"  shared file storage path: {info['shared_file_storage_dir']}")
    print(f"  enabled disk templates: {', '.join(info['enabled_disk_templates'])}")
    print(f"  maximum concurrent jobs: {info['max_running_jobs']}")
    print(f"  hotplug by default: {info['hotplug_by_default']}")
    print(f"  OVN northbound database: {info.get('ovn_nb') or '(none)'}")
    print("Default instance parameters:")
    _print_dict(info["beparams"], 1)
    print("Default nic parameters:")
    _print_dict(info["nicparams"], 1)
    print("Disk parameters:")
    _print_dict(info["diskparams"], 1)
    print(f"Software version: {info['software_version']}")
    print(f"Configuration serial: {info['serial_no']}")
    return EXIT_SUCCESS


# --- modify / verify -------------------------------------------------------------------------


def _setup_modify(p: argparse.ArgumentParser) -> None:
    _add_param_options(p)
    p.add_argument("--max-running-jobs", type=int)
    p.add_argument("--hotplug-by-default", choices=["yes", "no"])
    p.add_argument(
        "--ovn-nb",
        metavar="REMOTE",
        help="OVN northbound database: tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH; '' = no OVN",
    )
    p.add_argument("--submit", action="store_true")


def cmd_modify(client: Client, args: argparse.Namespace) -> int:
    op: dict[str, Any] = {"OP_ID": "OP_CLUSTER_SET_PARAMS", **op_common(args)}
    if args.hvparams:
        op["hvparams"] = _hv_options(args.hvparams)
    if args.beparams is not None:
        op["beparams"] = parse_keyval(args.beparams, "beparams")
    if args.nicparams is not None:
        op["nicparams"] = parse_keyval(args.nicparams, "nicparams")
    if args.diskparams:
        op["diskparams"] = _disk_options(args.diskparams)
    if args.enabled_hypervisors is not None:
        op["enabled_hypervisors"] = _list_option(args.enabled_hypervisors, "enabled_hypervisors")
    if args.enabled_disk_templates is not None:
        op["enabled_disk_templates"] = _list_option(
            args.enabled_disk_templates, "enabled_disk_templates"
        )
    for name in ("candidate_pool_size", "mac_prefix", "max_running_jobs"):
        if getattr(args, name) is not None:
            op[name] = getattr(args, name)
    if args.hotplug_by_default is not None:
        op["hotplug_by_default"] = args.hotplug_by_default == "yes"
    if args.ovn_nb is not None:
        op["ovn_nb"] = args.ovn_nb
    if len(op) <= 2:
        raise UsageError("nothing to change; give at least one option", ECode.INVAL)
    submit_or_wait(client, [op], args)
    return EXIT_SUCCESS


def _setup_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--submit", action="store_true")


def cmd_verify(client: Client, args: argparse.Namespace) -> int:
    ok = submit_or_wait(client, [{"OP_ID": "OP_CLUSTER_VERIFY"}], args)
    if ok is None:
        return EXIT_SUCCESS
    return EXIT_SUCCESS if ok else EXIT_FAILURE


# --- queue ---------------------------------------------------------------------------


def _setup_queue(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["drain", "undrain", "info"])


def cmd_queue(client: Client, args: argparse.Namespace) -> int:
    if args.action == "info":
        (drained,) = client.call("QueryConfigValues", [["drain_flag"]])
        print(f"The drain flag is {'set' if drained else 'unset'}")
    else:
        client.call("SetDrainFlag", [args.action == "drain"])
    return EXIT_SUCCESS


def cmd_version(client: Client, args: argparse.Namespace) -> int:
    from corral import __version__

    print(f"Software version: {__version__}")
    return EXIT_SUCCESS


def _none(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS = [
    Command("init", cmd_init, _setup_init, "initialise a new cluster"),
    Command("destroy", cmd_destroy, _setup_destroy, "destroy the cluster"),
    Command("info", cmd_info, _none, "show cluster configuration"),
    Command("getmaster", cmd_getmaster, _none, "print the master node's name"),
    Command(
        "master-failover",
        cmd_master_failover,
        _setup_failover,
        "make this master candidate the master (with voting)",
    ),
    Command("modify", cmd_modify, _setup_modify, "change cluster parameters"),
    Command("verify", cmd_verify, _setup_verify, "check the cluster's consistency"),
    *tag_commands("cluster", "the cluster"),
    Command("queue", cmd_queue, _setup_queue, "drain, undrain or show the job queue"),
    Command("version", cmd_version, _none, "show the software version"),
]

main = cli_main("gnt-cluster", COMMANDS, "Cluster administration")

__all__ = ["EXIT_FAILURE", "main"]
