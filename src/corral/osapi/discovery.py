"""Finding OS definitions in the node's search path and checking their files.

Layer: driver (node side; reads the filesystem, runs nothing). Corral's
own directory comes first, then Ganeti's, so definitions installed for
Ganeti work unchanged. Directories under ``/srv`` are the admin's, per
node, and live under the node's root prefix (a test or virtual-cluster
node has its own); the package directories under ``/usr`` are the host's
(so every node of a virtual cluster finds Debian's ``ganeti-os-noop``).
Nothing here raises for a broken definition: it is reported invalid, with
the reason, like ``gnt-os diagnose`` shows it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from corral.osapi import parse
from corral.paths import Paths
from corral.rpc.types import OsDefinition, OsParameter

CORRAL_OS_DIR = "/srv/corral/os"
GANETI_OS_DIRS = (
    "/srv/ganeti/os",
    "/usr/local/lib/ganeti/os",
    "/usr/lib/ganeti/os",
    "/usr/share/ganeti/os",
)


def search_path(paths: Paths) -> list[Path]:
    """The directories searched for OS definitions on this node, in order."""
    out: list[Path] = []
    for d in (CORRAL_OS_DIR, *GANETI_OS_DIRS):
        out.append(paths.host_path(d) if d.startswith("/srv/") else Path(d))
    return out


def _errno_text(err: OSError) -> str:
    return err.strerror or str(err)


def _invalid(name: str, path: Path, reason: str, api: list[int] | None = None) -> OsDefinition:
    return OsDefinition(
        name=name, path=str(path), valid=False, diagnose=reason, api_versions=api or []
    )


def load(name: str, os_dir: Path) -> OsDefinition:
    """Read and check the definition in ``os_dir`` (never raises for a broken one)."""
    api_file = os_dir / parse.API_FILE
    try:
        st = os.stat(api_file)
    except OSError as err:
        return _invalid(
            name,
            os_dir,
            f"Required file '{parse.API_FILE}' not found under path {os_dir}: {_errno_text(err)}",
        )
    if not stat.S_ISREG(st.st_mode):
        return _invalid(name, os_dir, f"File '{parse.API_FILE}' in {os_dir} is not a regular file")
    try:
        declared = parse.parse_api_versions(api_file.read_text(errors="replace"))
    except OSError as err:
        return _invalid(
            name, os_dir, f"Error while reading the API version file at {api_file}: {err}"
        )
    except parse.DefinitionError as err:
        return _invalid(name, os_dir, str(err))
    versions = parse.supported_versions(declared)
    if not versions:
        return _invalid(
            name,
            os_dir,
            f"API version mismatch for path '{os_dir}': found {declared or 'none'}, want "
            f"{', '.join(map(str, sorted(parse.SUPPORTED_API_VERSIONS)))}",
            declared,
        )
    files = parse.required_files(versions[0])
    present: set[str] = set()
    for filename, required in files.items():
        try:
            st = os.stat(os_dir / filename)
        except OSError as err:
            if not required and isinstance(err, FileNotFoundError):
                continue
            return _invalid(
                name,
                os_dir,
                f"File '{filename}' under path '{os_dir}' is missing ({_errno_text(err)})",
                declared,
            )
        if not stat.S_ISREG(st.st_mode):
            return _invalid(
                name,
                os_dir,
                f"File '{filename}' under path '{os_dir}' is not a regular file",
                declared,
            )
        if parse.is_script(filename) and not st.st_mode & stat.S_IXUSR:
            return _invalid(
                name, os_dir, f"File '{filename}' under path '{os_dir}' is not executable", declared
            )
        present.add(filename)
    variants: list[str] = []
    parameters: list[OsParameter] = []
    try:
        if parse.VARIANTS_FILE in present:
            variants = parse.parse_variants((os_dir / parse.VARIANTS_FILE).read_text())
        if parse.PARAMETERS_FILE in present:
            parameters = parse.parse_parameters((os_dir / parse.PARAMETERS_FILE).read_text())
    except (OSError, UnicodeDecodeError) as err:
        return _invalid(name, os_dir, f"Error while reading the files of {os_dir}: {err}", declared)
    except parse.DefinitionError as err:
        return _invalid(name, os_dir, f"{err} (under path '{os_dir}')", declared)
    return OsDefinition(
        name=name,
        path=str(os_dir),
        valid=True,
        api_versions=declared,
        variants=variants,
        parameters=parameters,
    )


def _entries(d: Path) -> list[str]:
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []  # missing or unreadable: nothing installed there
    return [n for n in names if not n.startswith(".") and (d / n).is_dir()]


def diagnose(dirs: list[Path]) -> list[OsDefinition]:
    """Every definition in ``dirs``, in search order (an earlier one of a name wins)."""
    return [load(name, d / name) for d in dirs for name in _entries(d)]


def find(name: str, dirs: list[Path]) -> OsDefinition | None:
    """The definition of OS ``name`` (without variant) that takes effect, or None."""
    if not parse.valid_os_dir_name(name):
        return None
    for d in dirs:
        if (d / name).is_dir():
            return load(name, d / name)
    return None
