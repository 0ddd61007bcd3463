"""``corral``: one entry point for everything (``corral instance list`` …).

Layer: CLI. ``corral cluster …`` is ``gnt-cluster …`` and so on.
"""

from __future__ import annotations

import importlib
import sys

from corral.cli import common
from corral.errors import ECode

# Group → (program, its module in corral.cli, description). Only the module of
# the group asked for is imported: each run pays for one program, not six.
GROUPS = {
    "cluster": ("gnt-cluster", "gnt_cluster", "Cluster administration"),
    "node": ("gnt-node", "gnt_node", "Node administration"),
    "instance": ("gnt-instance", "gnt_instance", "Instance administration"),
    "network": ("gnt-network", "gnt_network", "Network administration"),
    "job": ("gnt-job", "gnt_job", "Job queue administration"),
    "os": ("gnt-os", "gnt_os", "Operating system definitions"),
    "debug": ("gnt-debug", "gnt_debug", "Debugging commands"),
}

USAGE = "usage: corral {" + ",".join(GROUPS) + "} COMMAND [options]\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        for name, (prog, _c, desc) in GROUPS.items():
            sys.stdout.write(f"  {name:10s} {desc} (same as {prog})\n")
        sys.stdout.write(f"  {'vcluster':10s} Virtual cluster of network namespaces on this host\n")
        sys.stdout.write(f"  {'testguest':10s} Build the Linux test guest (kernel + initrd)\n")
        sys.exit(0 if args else ECode.INVAL.exit_code)
    if args[0] == "vcluster":  # its own argparse CLI; imported lazily (pyroute2)
        from corral.cli import vcluster

        sys.exit(vcluster.main(args[1:]))
    if args[0] == "testguest":  # its own argparse CLI; imported lazily
        from corral.cli import testguest

        sys.exit(testguest.main(args[1:]))
    group = GROUPS.get(args[0])
    if group is None:
        sys.stderr.write(f"corral: unknown command group {args[0]!r}\n" + USAGE)
        sys.exit(ECode.INVAL.exit_code)
    _prog, module, desc = group
    commands = importlib.import_module(f"corral.cli.{module}").COMMANDS
    sys.exit(common.run(f"corral {args[0]}", commands, desc, args[1:]))
