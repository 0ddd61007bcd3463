"""OS definitions as text: API versions, variants, parameters, OS names. Pure.

Layer: driver support (pure; imports ``errors``, ``rpc.types``). Follows
``ganeti-os-interface(7)``: ``ganeti_api_version`` lists the API versions
the definition complies with, one per line; ``variants.list`` (API 15 and
up, optional) the declared variants, the first being the default;
``parameters.list`` (API 20, required) one ``name description`` per line.
An instance's OS is named ``<os>`` or ``<os>+<variant>``.
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.errors import ParameterError
from corral.rpc.types import OsDefinition, OsParameter

API_V10, API_V15, API_V20 = 10, 15, 20
SUPPORTED_API_VERSIONS = frozenset({API_V10, API_V15, API_V20})

API_FILE = "ganeti_api_version"
VARIANTS_FILE = "variants.list"
PARAMETERS_FILE = "parameters.list"

SCRIPT_CREATE, SCRIPT_IMPORT, SCRIPT_EXPORT, SCRIPT_RENAME, SCRIPT_VERIFY = (
    "create",
    "import",
    "export",
    "rename",
    "verify",
)
BASE_SCRIPTS = (SCRIPT_CREATE, SCRIPT_IMPORT, SCRIPT_EXPORT, SCRIPT_RENAME)

# The only check ``verify`` knows (API 20): it is passed as its argument.
VERIFY_PARAMETERS = "parameters"


class DefinitionError(ValueError):
    """A definition's file cannot be understood; the message says why."""


def _lines(text: str) -> list[str]:
    """Stripped lines, without empty ones and ``#`` comments."""
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def parse_api_versions(text: str) -> list[int]:
    """All versions in ``ganeti_api_version`` (supported or not), in file order.

    Raises :class:`DefinitionError` when a line is not an integer.
    """
    out: list[int] = []
    for line in _lines(text):
        try:
            out.append(int(line))
        except ValueError:
            raise DefinitionError(
                f"API version(s) can't be converted to integer: {line!r}"
            ) from None
    return out


def parse_variants(text: str) -> list[str]:
    """Declared variants in file order (the first is the default), duplicates dropped."""
    return list(dict.fromkeys(_lines(text)))


def parse_parameters(text: str) -> list[OsParameter]:
    """``name description`` lines (space and/or tab separated; the description may be empty).

    Raises :class:`DefinitionError` for a name that cannot become an
    environment variable (``OSP_<NAME>``) or appears twice.
    """
    out: dict[str, OsParameter] = {}
    for line in _lines(text):
        name, *rest = line.split(None, 1)
        desc = rest[0] if rest else ""
        if "=" in name:
            raise DefinitionError(f"invalid parameter name {name!r} in {PARAMETERS_FILE}")
        if name in out:
            raise DefinitionError(f"parameter {name!r} declared twice in {PARAMETERS_FILE}")
        out[name] = OsParameter(name=name, description=desc.strip())
    return list(out.values())


def supported_versions(declared: list[int]) -> list[int]:
    """The declared versions Corral speaks, highest first."""
    return sorted(SUPPORTED_API_VERSIONS.intersection(declared), reverse=True)


def required_files(api: int) -> dict[str, bool]:
    """Files of a definition of API ``api``: name → required (else optional)."""
    files = dict.fromkeys(BASE_SCRIPTS, True)
    if api >= API_V15:
        files[VARIANTS_FILE] = False
    if api >= API_V20:
        files[PARAMETERS_FILE] = True
        files[SCRIPT_VERIFY] = True
    return files


def is_script(filename: str) -> bool:
    return filename in BASE_SCRIPTS or filename == SCRIPT_VERIFY


# --- OS names, variants and parameters ----------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """``debootstrap+buster`` → ``("debootstrap", "buster")``; no variant → ``""``."""
    os_name, _, variant = name.partition("+")
    return os_name, variant


def valid_os_dir_name(name: str) -> bool:
    """A name that can only mean a directory directly inside a search-path entry."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def api_version(defn: OsDefinition) -> int:
    """The version the scripts are run with: the highest one both sides speak."""
    versions = supported_versions(defn.api_versions)
    return versions[0] if versions else 0


def resolve_variant(defn: OsDefinition, name: str, force_variant: bool = False) -> str:
    """The variant an OS name selects (``OS_VARIANT``), checked against ``variants.list``.

    No variant given means the default (the first declared). An OS that
    declares no variants (or speaks API 10) takes none. ``force_variant``
    passes a variant the OS does not declare (Ganeti's ``--force-variant``).
    Raises :class:`ParameterError` on ``os_type``.
    """
    os_name, variant = split_name(name)
    if api_version(defn) < API_V15 or not defn.variants:
        if variant and not force_variant:
            raise ParameterError(
                "os_type", f"OS '{os_name}' doesn't support variants ('{variant}' passed)"
            )
        return ""
    if not variant:
        return defn.variants[0]
    if variant not in defn.variants and not force_variant:
        raise ParameterError(
            "os_type",
            f"OS '{os_name}' has no variant '{variant}' (variants: "
            f"{', '.join(defn.variants)}); --force-variant passes it anyway",
        )
    return variant


def check_parameters(defn: OsDefinition, osparams: Mapping[str, str]) -> None:
    """Every given parameter is declared in ``parameters.list``; raise ParameterError."""
    known = [p.name for p in defn.parameters]
    unknown = [k for k in osparams if k not in known]
    if not unknown:
        return
    if api_version(defn) < API_V20:
        raise ParameterError(
            f"osparams/{unknown[0]}",
            f"OS '{defn.name}' takes no parameters (it speaks OS API {api_version(defn)}; "
            "parameters need API 20)",
        )
    raise ParameterError(
        f"osparams/{unknown[0]}",
        f"not a parameter of OS '{defn.name}' (its parameters: {', '.join(known) or 'none'})",
    )
