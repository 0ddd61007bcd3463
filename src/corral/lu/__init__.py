"""Logical units; importing this package registers every LU for its opcode."""

from corral.lu import (  # noqa: F401
    cleanup,
    cluster,
    instance,
    instance_console,
    instance_create,
    instance_migrate,
    instance_set_params,
    network,
    node,
    os,
    ovn_sync,
)
