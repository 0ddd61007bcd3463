"""``corral vcluster up|down|status``: the virtual cluster on this host.

Layer: CLI (imports ``vcluster``). Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corral import vcluster as vcl
from corral.vcluster import model


def _target(args: argparse.Namespace) -> str | Path | None:
    if args.root:
        return Path(args.root)
    if args.prefix:
        return str(args.prefix)
    found = vcl.list_clusters()
    if len(found) == 1:
        return found[0]
    if not found:
        raise model.VClusterError(f"no virtual cluster under {model.DEFAULT_BASE}")
    names = ", ".join(p.name for p in found)
    raise model.VClusterError(f"several virtual clusters ({names}): give --prefix or --root")


def cmd_up(args: argparse.Namespace) -> int:
    vc = vcl.up(args.nodes, prefix=args.prefix, base=args.root, ovn=args.ovn)
    try:
        if not args.no_init:
            vcl.init_cluster(vc)
    except BaseException:
        vcl.down(vc)
        raise
    print(f"virtual cluster {vc.prefix} up: {len(vc.nodes)} nodes, state in {vc.state_file}")
    for node in vc.nodes:
        pid = f"noded pid {node.noded_pid}" if node.noded_pid else "noded not started"
        print(f"  {node.name}  ns {node.ns}  {node.mgmt_ip}  root {node.root}  {pid}")
    print(f"master commands: CORRAL_ROOT={vc.master.root} gnt-cluster ...")
    if vc.ovn:
        from corral.vcluster import ovn

        c = ovn.central(vc)
        print(f"OVN on {c.node}: NB {c.nb_remote} (host: {c.nb_unix}), SB {c.sb_remote}")
        print(f"  chassis: {', '.join(n.name for n in vc.nodes)} (geneve, userspace datapath)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if args.all:
        reports = vcl.down_all()
        if not reports:
            print(f"no virtual cluster under {model.DEFAULT_BASE}")
    else:
        target = _target(args)
        assert target is not None
        reports = [vcl.down(target, prefix=args.prefix)]
    for r in reports:
        print(
            f"virtual cluster {r.prefix} down: stopped {len(r.stopped)} processes, "
            f"removed {len(r.namespaces)} namespaces and {len(r.dirs)} directories"
        )
        for line in r.leftovers:
            print(f"  warning: {line}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.prefix or args.root:
        targets: list[str | Path] = [t for t in [_target(args)] if t is not None]
    else:
        targets = list(vcl.list_clusters())
        if not targets:
            print(f"no virtual cluster under {model.DEFAULT_BASE}")
            return 0
    infos = [vcl.status(t) for t in targets]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    for info in infos:
        state = "complete" if info["complete"] else "INCOMPLETE"
        sw = "" if info["switch_exists"] else " (switch namespace missing)"
        print(f"virtual cluster {info['prefix']} ({state}) in {info['base']}{sw}")
        print(f"  {'Node':8s} {'Namespace':14s} {'Mgmt IP':15s} {'noded':14s} Root")
        for n in info["nodes"]:
            if not n["ns_exists"]:
                daemon = "no namespace"
            elif n["noded_running"]:
                daemon = f"pid {n['noded_pid']}"
            else:
                daemon = "not running"
            print(f"  {n['name']:8s} {n['ns']:14s} {n['mgmt_ip']:15s} {daemon:14s} {n['root']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="corral vcluster", description="A virtual cluster of network namespaces."
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="create a virtual cluster and start its node daemons")
    up.add_argument("--nodes", "-n", type=int, required=True, help="number of nodes")
    up.add_argument("--prefix", help="name prefix (default: cv<random>-)")
    up.add_argument("--root", help=f"base directory (default: {model.DEFAULT_BASE}/<prefix>)")
    up.add_argument("--no-init", action="store_true", help="network and roots only")
    up.add_argument(
        "--ovn", action="store_true", help="OVN: NB/SB + ovn-northd on node1, every node a chassis"
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove a virtual cluster (also after a crash)")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help=f"every one under {model.DEFAULT_BASE}")
    which.add_argument("--root", help="its base directory")
    down.add_argument("--prefix", help="its prefix")
    down.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="show virtual clusters")
    st.add_argument("--prefix")
    st.add_argument("--root")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if getattr(args, "all", False) and args.prefix:
        p.error("--all and --prefix are exclusive")
    try:
        rc: int = args.func(args)
    except (model.VClusterError, OSError) as err:
        print(f"corral vcluster: {err}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
