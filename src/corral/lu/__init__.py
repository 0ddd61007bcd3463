"""Logical units; importing this package registers every LU for its opcode."""

from corral.lu import cluster, instance, instance_console, instance_create, node  # noqa: F401
