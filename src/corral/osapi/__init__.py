"""OS definitions: Ganeti's OS API (versions 10, 15 and 20) on the node.

Layer: driver (node side; imports ``errors``, ``paths``, ``rpc.types``). An
OS definition is a directory of scripts (``create``, ``import``,
``export``, ``rename``, and ``verify`` from API 20) and text files
(``ganeti_api_version``, ``variants.list``, ``parameters.list``), found in
a search path; see ``ganeti-os-interface(7)``. Definitions written for
Ganeti work unchanged.

Modules: ``parse`` (pure: files, names, variants, parameters),
``env`` (pure: the scripts' environment), ``discovery`` (reading the
search path), ``runner`` (running scripts with a timeout and a log).
"""

from corral.osapi.discovery import CORRAL_OS_DIR, GANETI_OS_DIRS, diagnose, find, search_path
from corral.osapi.env import os_core_env, os_env
from corral.osapi.parse import (
    SUPPORTED_API_VERSIONS,
    api_version,
    check_parameters,
    resolve_variant,
    split_name,
)

__all__ = [
    "CORRAL_OS_DIR",
    "GANETI_OS_DIRS",
    "SUPPORTED_API_VERSIONS",
    "api_version",
    "check_parameters",
    "diagnose",
    "find",
    "os_core_env",
    "os_env",
    "resolve_variant",
    "search_path",
    "split_name",
]
